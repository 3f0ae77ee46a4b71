import json
from pathlib import Path

import numpy as np
import pytest

from galaxalign.schema import GZ1
from galaxalign.viz import loss_curves, metrics_table, per_class_table, sample_mosaic, split_summary


def test_split_summary_counts_by_hand():
    labels = np.array([0, 0, 0, 1, 3, 3, 5])
    table = split_summary(labels, {"train": np.array([0, 1, 3, 4]), "test": np.array([2, 5, 6])}, GZ1)
    assert table.loc["elliptical", "train"] == 2
    assert table.loc["elliptical", "test"] == 1
    assert table.loc["edge_on", "all"] == 2
    assert table.loc["merger", "test"] == 1
    assert table.loc["total", "all"] == 7
    assert table.loc["total", "train"] == 4


def test_sample_mosaic_places_galaxies_by_class():
    pixels = np.zeros((4, 2, 2, 3), dtype=np.uint8)
    for row in range(4):
        pixels[row] = 50 * (row + 1)
    labels = np.array([1, 0, 1, 0])
    rows = np.array([0, 1, 2, 3])
    mosaic = sample_mosaic(pixels, rows, labels, n_classes=2, per_class=2, gap=1)
    # Class 0 (galaxies 1 and 3) fills the top row of cells, class 1 (galaxies 0 and 2) the next.
    assert mosaic.shape == (5, 5, 3)
    assert mosaic[0, 0, 0] == 100
    assert mosaic[0, 3, 0] == 200
    assert mosaic[3, 0, 0] == 50
    assert mosaic[3, 3, 0] == 150
    assert mosaic[2, 2, 0] == 0


def test_loss_curves_read_run_logs(tmp_path: Path):
    steps = [{"stage": 1, "step": i, "loss": 4.0 - i / 10} for i in range(1, 6)]
    steps += [{"stage": 2, "step": i, "loss": 9.0} for i in range(6, 9)]
    (tmp_path / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    epochs = [{"stage": 1, "epoch": 1, "step": 5, "val_accuracy": 0.5, "val_macro_f1": 0.25}]
    (tmp_path / "metrics.jsonl").write_text(json.dumps(epochs[0]) + "\n")
    figure = loss_curves(tmp_path, smooth=2)
    names = [trace.name for trace in figure.data]
    assert names == ["stage 1 loss", "stage 2 loss", "accuracy", "macro F1"]
    # A moving average over 2 steps: (4.0 - 0.1 + 4.0 - 0.2) / 2 at the second step.
    assert figure.data[0].y[1] == pytest.approx(3.85)
    assert list(figure.data[2].y) == [0.5]


def test_loss_curves_without_logs(tmp_path: Path):
    figure = loss_curves(tmp_path)
    assert len(figure.data) == 0
    assert "no training steps" in figure.layout.title.text


def test_metrics_tables_round_values():
    metrics = {
        "accuracy": 0.91234,
        "macro_f1": 0.5,
        "map_at_5": 0.66666,
        "map": 0.7,
        "n_test": 12,
        "per_class": {"elliptical": {"precision": 0.12345, "recall": 1.0, "f1": 0.2, "support": 3}},
    }
    table = metrics_table(metrics)
    assert table.loc["test", "accuracy"] == 0.912
    assert table.loc["test", "map_at_5"] == 0.667
    assert table.loc["test", "n_test"] == 12
    assert per_class_table(metrics).loc["elliptical", "precision"] == 0.123
