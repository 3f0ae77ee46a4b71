"""Seeded, stratified train/validation/test splits of a GalaxyDataset, saved as split.json."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from galaxalign.data.dataset import GalaxyDataset

logger = logging.getLogger(__name__)

SPLIT_FILENAME = "split.json"
_PARTS = ("train", "val", "test")


class SplitIndices(NamedTuple):
    """Positions in a dataset (int64 arrays) of the galaxies of each part of a split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass
class Split:
    """A train/validation/test split as lists of object ids, with the parameters that made it.

    ``canonical_test`` is true when the test part is the data set's own test
    set (GalaxyMNIST) rather than drawn with ``test_fraction``.
    """

    train: list[str]
    val: list[str]
    test: list[str]
    seed: int
    val_fraction: float
    test_fraction: float
    canonical_test: bool = field(default=False)

    def __post_init__(self) -> None:
        self.train = [str(i) for i in self.train]
        self.val = [str(i) for i in self.val]
        self.test = [str(i) for i in self.test]
        seen: dict[str, str] = {}
        for part in _PARTS:
            for objid in getattr(self, part):
                if objid in seen:
                    raise ValueError(
                        f"object id {objid!r} is in both the {seen[objid]} and the {part} part of "
                        "the split; each galaxy must be in exactly one part"
                    )
                seen[objid] = part

    def indices(self, dataset: GalaxyDataset) -> SplitIndices:
        """Return the positions of the train, val and test galaxies in ``dataset``.

        Raises ``KeyError`` when an id of the split is not in the dataset.
        """
        return SplitIndices(*(dataset.positions_of(getattr(self, part)) for part in _PARTS))

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON and return the file written.

        ``path`` is a ``.json`` file, or a run directory (created if needed)
        that receives ``split.json``.
        """
        file = _split_file(Path(path))
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(asdict(self), indent=1) + "\n")
        logger.info(
            "saved the split (%d train, %d val, %d test) to %s",
            len(self.train),
            len(self.val),
            len(self.test),
            file,
        )
        return file

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """Read a split written by :meth:`save` from a ``.json`` file or a run directory."""
        file = _split_file(Path(path))
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{file} is not valid JSON ({error}); write it again with Split.save") from error
        expected = ("train", "val", "test", "seed", "val_fraction", "test_fraction")
        missing = [key for key in expected if key not in data] if isinstance(data, dict) else list(expected)
        if missing:
            raise ValueError(f"{file} lacks the split fields {missing}; write it again with Split.save")
        return cls(**{key: data[key] for key in (*expected, "canonical_test") if key in data})


def _split_file(path: Path) -> Path:
    if path.suffix.lower() == ".json" and not path.is_dir():
        return path
    return path / SPLIT_FILENAME


def stratified_split(
    dataset: GalaxyDataset,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> Split:
    """Split a dataset so that each part has the class proportions of the whole.

    Each class is shuffled with its own generator, seeded by ``seed`` and the
    label, so a seed always gives the same split. Of a class of n galaxies,
    ``round(n * test_fraction)`` go to test and ``round(n * val_fraction)`` to
    val, with halves rounded up, and the rest to train. Each class keeps at
    least one galaxy in train: a class of one galaxy goes wholly to train, and
    when rounding would empty train, val gives up galaxies first, then test.

    A dataset with a ``canonical_split`` keeps its own test set: those
    galaxies are the test part, ``test_fraction`` is not used, and val is
    drawn per class with ``val_fraction`` from the canonical training galaxies.
    The ids in each part are in dataset order.
    """
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1 to leave galaxies for training, got "
            f"{val_fraction} + {test_fraction}"
        )

    labels = dataset.labels
    part_of = np.zeros(len(dataset), dtype=np.int8)  # 0 train, 1 val, 2 test
    tags = dataset.canonical_split
    if tags is not None:
        unknown = sorted(set(tags.tolist()) - {"train", "test"})
        if unknown:
            raise ValueError(
                f"{dataset.source}: canonical_split contains {unknown}; expected 'train' or 'test'"
            )
        part_of[tags == "test"] = 2
        pool = np.flatnonzero(tags == "train")
        logger.info(
            "%s has its own test set of %d galaxies; test_fraction is not used",
            dataset.source,
            int((tags == "test").sum()),
        )
        effective_test = 0.0
    else:
        pool = np.arange(len(dataset))
        effective_test = test_fraction

    for label in np.unique(labels[pool]):
        members = pool[labels[pool] == label]
        shuffled = np.random.default_rng([seed, int(label)]).permutation(members)
        n_test, n_val = _part_sizes(len(members), val_fraction, effective_test)
        part_of[shuffled[:n_test]] = 2
        part_of[shuffled[n_test : n_test + n_val]] = 1

    ids = dataset.ids
    split = Split(
        train=ids[part_of == 0].tolist(),
        val=ids[part_of == 1].tolist(),
        test=ids[part_of == 2].tolist(),
        seed=int(seed),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        canonical_test=tags is not None,
    )
    logger.info(
        "split %d galaxies of %s with seed %d: %d train, %d val, %d test",
        len(dataset),
        dataset.source,
        seed,
        len(split.train),
        len(split.val),
        len(split.test),
    )
    return split


def _part_sizes(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Return (test, val) sizes for a class of ``count`` galaxies, leaving at least one for train."""
    n_test = math.floor(count * test_fraction + 0.5)
    n_val = math.floor(count * val_fraction + 0.5)
    excess = n_test + n_val - (count - 1)
    if excess > 0:
        cut = min(excess, n_val)
        n_val -= cut
        n_test -= excess - cut
    return max(n_test, 0), max(n_val, 0)


def _check_fraction(value: float, name: str) -> float:
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return fraction
