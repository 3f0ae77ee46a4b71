"""Figures and tables for notebooks: sample galaxies, loss curves and metric tables."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from galaxalign.schema import ClassSchema


def split_summary(labels: np.ndarray, splits: Mapping[str, np.ndarray], schema: ClassSchema) -> pd.DataFrame:
    """Count galaxies per class (rows) and split (columns), with a total row and column."""
    columns = {
        name: np.bincount(labels[positions], minlength=len(schema)) for name, positions in splits.items()
    }
    table = pd.DataFrame(columns, index=pd.Index(schema.names, name="class"))
    table["all"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    return table


def sample_mosaic(
    pixels: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    per_class: int = 8,
    seed: int = 0,
    gap: int = 2,
) -> np.ndarray:
    """Tile ``per_class`` random galaxies of each class into one uint8 image, a class per row.

    ``pixels`` is the (N, S, S, 3) cache, ``rows[i]`` the cache row of galaxy
    ``i`` and ``labels[i]`` its class. Classes with fewer galaxies leave black cells.
    """
    rng = np.random.default_rng(seed)
    size = pixels.shape[1]
    step = size + gap
    mosaic = np.zeros((n_classes * step - gap, per_class * step - gap, 3), dtype=np.uint8)
    for label in range(n_classes):
        members = np.flatnonzero(labels == label)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for column, galaxy in enumerate(np.sort(chosen)):
            mosaic[label * step : label * step + size, column * step : column * step + size] = pixels[
                rows[galaxy]
            ]
    return mosaic


def sample_grid(
    pixels: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray,
    schema: ClassSchema,
    per_class: int = 8,
    seed: int = 0,
) -> go.Figure:
    """Plot :func:`sample_mosaic` with the class names beside their rows."""
    mosaic = sample_mosaic(pixels, rows, labels, len(schema), per_class, seed)
    step = pixels.shape[1] + 2
    counts = np.bincount(labels, minlength=len(schema))
    figure = px.imshow(mosaic)
    figure.update_yaxes(
        tickmode="array",
        tickvals=[i * step + step / 2 for i in range(len(schema))],
        ticktext=[f"{name} ({count})" for name, count in zip(schema.names, counts, strict=True)],
    )
    figure.update_xaxes(showticklabels=False)
    figure.update_layout(
        title=f"{per_class} random galaxies per class (count in the data set)",
        height=90 + 60 * len(schema),
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return figure


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loss_curves(run_dir: str | Path, smooth: int = 10) -> go.Figure:
    """Plot the training loss of every step (moving average over ``smooth`` steps) and the
    validation accuracy and macro F1 of every epoch, from a run directory's logs."""
    run_dir = Path(run_dir)
    steps = pd.DataFrame(read_jsonl(run_dir / "steps.jsonl"))
    epochs = pd.DataFrame(read_jsonl(run_dir / "metrics.jsonl"))
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("training loss", "validation (zero-shot by prompts)")
    )
    if steps.empty:
        figure.update_layout(title=f"no training steps logged in {run_dir}")
        return figure
    for stage, part in steps.groupby("stage"):
        smoothed = part["loss"].rolling(window=smooth, min_periods=1).mean()
        figure.add_trace(go.Scatter(x=part["step"], y=smoothed, name=f"stage {stage} loss"), row=1, col=1)
    if not epochs.empty:
        for column, label in (("val_accuracy", "accuracy"), ("val_macro_f1", "macro F1")):
            figure.add_trace(
                go.Scatter(x=epochs["step"], y=epochs[column], mode="lines+markers", name=label), row=1, col=2
            )
    figure.update_xaxes(title_text="optimizer step")
    figure.update_yaxes(range=[0, 1], row=1, col=2)
    figure.update_layout(height=380)
    return figure


def metrics_table(
    metrics: Mapping[str, Any], keys: Sequence[str] = ("accuracy", "macro_f1", "map_at_5", "map")
) -> pd.DataFrame:
    """One-row table of the headline test metrics, rounded to 3 decimals, with the test-set size."""
    row = {key: round(float(metrics[key]), 3) for key in keys if key in metrics}
    row["n_test"] = int(metrics.get("n_test", 0))
    return pd.DataFrame([row], index=["test"])


def per_class_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class from ``metrics["per_class"]``."""
    return pd.DataFrame(metrics["per_class"]).T.round(3)
