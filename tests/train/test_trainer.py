import json
import math
from pathlib import Path

import numpy as np
import pytest
import small_runs
import torch

from galaxalign.data import CatalogError
from galaxalign.train import TrainConfig, Trainer, train
from galaxalign.train.rundir import RunDirectoryError


def small_config(catalog: Path, **overrides) -> TrainConfig:
    """Return the small CPU config with batches of 16 and at most 2 steps a stage, unless overridden."""
    return small_runs.small_config(catalog, **{"batch_size": 16, "max_steps": 2, **overrides})


def test_stage1_then_stage2_continues(small_catalog: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    first = train(small_config(small_catalog, stage=1), run_dir=run_dir)
    assert first["stage"] == 1
    assert (run_dir / "checkpoints" / "stage1" / "epoch_001.pt").exists()

    second = train(small_config(small_catalog, stage=2), run_dir=run_dir)
    assert second["stage"] == 2
    assert json.loads((run_dir / "metrics_stage1.json").read_text())["stage"] == 1
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "map_at_5", "map"):
        assert 0.0 <= saved[key] <= 1.0, key
    assert saved["n_test"] == 12
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(e["stage"], e["epoch"]) for e in epochs] == [(1, 1), (2, 1)]


def test_finished_run_is_not_retrained(small_catalog: Path, tmp_path: Path):
    train(small_config(small_catalog), run_dir=tmp_path)
    with pytest.raises(RunDirectoryError, match="stage 2 of this run finished"):
        train(small_config(small_catalog), run_dir=tmp_path)


def test_checkpoint_holds_plain_data(small_catalog: Path, tmp_path: Path):
    train(small_config(small_catalog), run_dir=tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "stage2" / "epoch_001.pt", weights_only=True)
    assert state["stage"] == 2
    assert state["complete"] is True
    n_steps = len((tmp_path / "steps.jsonl").read_text().splitlines())
    assert state["step"] == n_steps
    assert state["config"]["batch_size"] == 16
    assert state["schema"]["name"] == "gz1"
    split = json.loads((tmp_path / "split.json").read_text())
    assert state["split"]["test"] == split["test"]
    assert any(key.startswith("symbol_visual.") for key in state["model"])
    assert "optimizer" in state
    assert "scheduler" in state


def test_same_seed_same_weights(small_catalog: Path, tmp_path: Path):
    for name in ("a", "b"):
        train(small_config(small_catalog, stage=1), run_dir=tmp_path / name)
    first = torch.load(tmp_path / "a" / "checkpoints" / "stage1" / "epoch_001.pt", weights_only=True)
    second = torch.load(tmp_path / "b" / "checkpoints" / "stage1" / "epoch_001.pt", weights_only=True)
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key


def test_without_symbols_trains_text_image_only(small_catalog: Path, tmp_path: Path):
    metrics = train(small_config(small_catalog, symbols="none"), run_dir=tmp_path)
    assert "symbol_accuracy" not in metrics
    assert not (tmp_path / "symbols.png").exists()
    state = torch.load(tmp_path / "checkpoints" / "stage2" / "epoch_001.pt", weights_only=True)
    assert not any(key.startswith("symbol_visual.") for key in state["model"])
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert all(set(s) == {"image_text", "loss", "grad_norm", "step", "stage"} for s in steps)


def test_prompts_and_symbols_encoded_once_per_class(small_catalog: Path, tmp_path: Path):
    trainer = Trainer(small_config(small_catalog), tmp_path)
    seen = {"text": [], "symbol": []}
    encode_text, encode_symbol = trainer.model.encode_text, trainer.model.encode_symbol
    trainer.model.encode_text = lambda tokens: seen["text"].append(len(tokens)) or encode_text(tokens)
    trainer.model.encode_symbol = lambda pixels: seen["symbol"].append(len(pixels)) or encode_symbol(pixels)

    positions = np.sort(trainer.data.train[:16])
    optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.0)
    trainer.train_step(1, positions, optimizer, torch.Generator().manual_seed(0))

    # Flips can turn one handedness into the other, so up to all six classes may occur.
    n_classes = len(set(trainer.data.dataset.labels[positions].tolist()) | {1, 2})
    assert seen["text"] == [pytest.approx(seen["text"][0])]
    assert seen["text"][0] <= min(n_classes, 6)
    assert seen["symbol"] == seen["text"]


def test_logit_scale_clamped_to_100(small_catalog: Path, tmp_path: Path):
    trainer = Trainer(small_config(small_catalog), tmp_path)
    with torch.no_grad():
        trainer.model.logit_scale.fill_(7.0)
    optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.0)
    trainer.train_step(1, np.sort(trainer.data.train[:16]), optimizer, torch.Generator().manual_seed(0))
    assert trainer.model.logit_scale.item() == pytest.approx(math.log(100.0))


def test_symbol_folder_replaces_builtin_symbols(small_catalog: Path, tmp_path: Path):
    from PIL import Image

    folder = tmp_path / "symbols"
    folder.mkdir()
    names = ["elliptical", "spiral_clockwise", "spiral_anticlockwise", "edge_on", "dont_know"]
    for value, name in enumerate(names):
        Image.new("L", (40, 40), color=40 * value + 20).save(folder / f"{name}.png")
    with pytest.raises(FileNotFoundError, match="no symbol image for class 'merger'.*merger.png"):
        Trainer(small_config(small_catalog, symbols=str(folder)), tmp_path / "run")
    Image.new("L", (40, 40), color=255).save(folder / "merger.png")
    trainer = Trainer(small_config(small_catalog, symbols=str(folder)), tmp_path / "run2")
    assert trainer.schema.classes[5].symbol == str(folder / "merger.png")


def broken_catalog(small_catalog: Path, folder: Path) -> tuple[Path, str, str]:
    """Copy the small catalog, truncate one JPEG and delete another; return the CSV and both ids."""
    import csv
    import shutil

    shutil.copytree(small_catalog.parent, folder)
    with (folder / "catalog.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    truncated, deleted = rows[0], rows[1]
    (folder / truncated["file"]).write_bytes((folder / truncated["file"]).read_bytes()[:200])
    (folder / deleted["file"]).unlink()
    return folder / "catalog.csv", truncated["objid"], deleted["objid"]


def test_missing_image_stops_with_file_name(small_catalog: Path, tmp_path: Path):
    catalog, _, deleted = broken_catalog(small_catalog, tmp_path / "catalog")
    with pytest.raises(CatalogError, match=f"{deleted}.jpeg.*skip_missing=True"):
        Trainer(small_config(catalog), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_skip_unreadable_leaves_out_broken_images(small_catalog: Path, tmp_path: Path):
    catalog, truncated, deleted = broken_catalog(small_catalog, tmp_path / "catalog")
    trainer = Trainer(small_config(catalog, skip_unreadable=True), tmp_path / "run")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    every_id = split["train"] + split["val"] + split["test"]
    assert len(every_id) == 46
    assert truncated not in every_id
    assert deleted not in every_id
    assert len(trainer.data.dataset) == 46


def test_failed_start_leaves_no_run(small_catalog: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="unknown model 'smal'"):
        train(small_config(small_catalog, model="smal"), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    metrics = train(small_config(small_catalog), run_dir=tmp_path / "run")
    assert metrics["n_test"] == 12


def test_empty_test_split_rejected_before_training(small_catalog: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="test split of .* is empty with test_fraction=0.0"):
        Trainer(small_config(small_catalog, test_fraction=0.0), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_changed_catalog_rejected_on_continue(small_catalog: Path, tmp_path: Path):
    import shutil

    folder = tmp_path / "catalog"
    shutil.copytree(small_catalog.parent, folder)
    train(small_config(folder / "catalog.csv", stage=1), run_dir=tmp_path / "run")
    lines = (folder / "catalog.csv").read_text().splitlines()
    (folder / "catalog.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(RunDirectoryError, match="the data changed since .* 0 galaxies added .* 1 removed"):
        train(small_config(folder / "catalog.csv", stage=2), run_dir=tmp_path / "run")


def test_missing_metrics_are_recomputed(small_catalog: Path, tmp_path: Path):
    first = train(small_config(small_catalog), run_dir=tmp_path)
    (tmp_path / "metrics.json").unlink()
    again = train(small_config(small_catalog), run_dir=tmp_path)
    assert again["accuracy"] == pytest.approx(first["accuracy"])
    assert again["map"] == pytest.approx(first["map"])
    assert json.loads((tmp_path / "metrics.json").read_text())["stage"] == 2
