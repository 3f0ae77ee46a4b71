from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from galaxalign.data.dataset import GalaxyDataset
from galaxalign.data.demo import load_demo
from galaxalign.data.images import FileImages
from galaxalign.data.split import Split, stratified_split
from galaxalign.schema import GALAXY_MNIST, GZ1


@pytest.fixture(scope="module")
def demo():
    """The bundled demo set: 5,652 real GZ1 labels, classes from 49 to 3,931 galaxies."""
    return load_demo()


def _labelled(labels: list[int], canonical: list[str] | None = None, schema=GZ1) -> GalaxyDataset:
    return GalaxyDataset(
        images=FileImages([]),
        labels=labels,
        ids=[f"g{i}" for i in range(len(labels))],
        schema=schema,
        source="labels only",
        rows=np.zeros(len(labels), dtype=np.int64),
        canonical_split=canonical,
    )


def test_split_keeps_class_proportions(demo):
    split = stratified_split(demo, val_fraction=0.15, test_fraction=0.2, seed=3)
    parts = split.indices(demo)
    fractions = {"train": 0.65, "val": 0.15, "test": 0.2}
    totals = np.bincount(demo.labels, minlength=len(GZ1))

    for part, expected_fraction in fractions.items():
        counts = np.bincount(demo.labels[getattr(parts, part)], minlength=len(GZ1))
        for label in range(len(GZ1)):
            assert abs(counts[label] - totals[label] * expected_fraction) <= 1, (part, label)


def test_split_parts_disjoint_and_cover_all(demo):
    split = stratified_split(demo, seed=1)
    train, val, test = set(split.train), set(split.val), set(split.test)
    assert not train & val
    assert not train & test
    assert not val & test
    assert train | val | test == set(demo.ids.tolist())
    assert len(split.train) + len(split.val) + len(split.test) == len(demo)


def test_same_seed_same_split(demo):
    first = stratified_split(demo, seed=7)
    again = stratified_split(demo, seed=7)
    other = stratified_split(demo, seed=8)
    assert first == again
    assert first.test != other.test


def test_hand_computed_sizes():
    # Class 0: 10 galaxies -> round(2.0) = 2 test, round(3.0) = 3 val, 5 train.
    # Class 1: 5 galaxies -> round(1.0) = 1 test, round(1.5) = 2 val (half up), 2 train.
    labels = [0] * 10 + [1] * 5
    dataset = _labelled(labels)
    split = stratified_split(dataset, val_fraction=0.3, test_fraction=0.2, seed=0)
    parts = split.indices(dataset)
    assert np.bincount(dataset.labels[parts.test], minlength=2).tolist() == [2, 1]
    assert np.bincount(dataset.labels[parts.val], minlength=2).tolist() == [3, 2]
    assert np.bincount(dataset.labels[parts.train], minlength=2).tolist() == [5, 2]


def test_tiny_classes_stay_in_train():
    # One galaxy of class 4; two of class 5, where rounding would send both to val and test.
    labels = [0] * 20 + [4] + [5, 5]
    dataset = _labelled(labels)
    split = stratified_split(dataset, val_fraction=0.4, test_fraction=0.45, seed=0)
    assert "g20" in split.train
    assert sum(objid in split.train for objid in ("g21", "g22")) == 1


def test_ids_in_dataset_order(demo):
    split = stratified_split(demo, seed=0)
    positions = split.indices(demo)
    for part in positions:
        assert np.all(np.diff(part) > 0)


def test_canonical_test_set_is_kept():
    labels = [0, 1, 2, 3] * 10 + [0, 1, 2, 3]
    canonical = ["train"] * 40 + ["test"] * 4
    dataset = _labelled(labels, canonical, schema=GALAXY_MNIST)
    split = stratified_split(dataset, val_fraction=0.2, test_fraction=0.5, seed=0)

    assert split.test == ["g40", "g41", "g42", "g43"]
    assert split.canonical_test
    parts = split.indices(dataset)
    # 10 training galaxies per class, 0.2 of them to val.
    assert np.bincount(dataset.labels[parts.val], minlength=4).tolist() == [2, 2, 2, 2]
    assert len(split.train) == 32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": -0.1}, r"val_fraction must be in \[0, 1\)"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"test_fraction": 1.5}, r"test_fraction must be in \[0, 1\)"),
        ({"test_fraction": "a fifth"}, r"test_fraction must be a number"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"val_fraction \+ test_fraction must be below 1"),
    ],
)
def test_bad_fractions_name_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        stratified_split(_labelled([0, 1, 2]), **kwargs)


def test_save_and_load_round_trip(tmp_path: Path, demo):
    split = stratified_split(demo, seed=5)
    written = split.save(tmp_path)

    assert written == tmp_path / "split.json"
    data = json.loads(written.read_text())
    assert data["seed"] == 5
    assert data["val_fraction"] == 0.15
    assert len(data["test"]) == len(split.test)
    assert Split.load(tmp_path) == split
    assert Split.load(written) == split


def test_save_creates_run_directory(tmp_path: Path):
    split = stratified_split(_labelled([0, 0, 1, 1, 1]), seed=2)
    written = split.save(tmp_path / "runs" / "first")
    assert written == tmp_path / "runs" / "first" / "split.json"
    assert Split.load(tmp_path / "runs" / "first") == split


def test_load_rejects_incomplete_file(tmp_path: Path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["a"], "val": [], "test": []}))
    with pytest.raises(
        ValueError, match=r"split.json lacks the split fields \['seed', 'val_fraction', 'test_fraction'\]"
    ):
        Split.load(path)


def test_overlapping_parts_rejected():
    with pytest.raises(ValueError, match="'b' is in both the train and the test part"):
        Split(train=["a", "b"], val=[], test=["b"], seed=0, val_fraction=0.0, test_fraction=0.5)


def test_indices_name_unknown_ids(demo):
    split = Split(train=["not-a-galaxy"], val=[], test=[], seed=0, val_fraction=0.0, test_fraction=0.0)
    with pytest.raises(KeyError, match="not-a-galaxy"):
        split.indices(demo)
