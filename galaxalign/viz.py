"""Figures and tables for notebooks: sample galaxies, loss curves, metric tables and retrieval galleries."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from matplotlib.figure import Figure
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


def confusion_figure(
    confusions: Mapping[str, Sequence[Sequence[int]]], class_names: Sequence[str], columns: int = 3
) -> Figure:
    """Draw one confusion matrix per method: rows are true classes, colour is the row fraction.

    ``confusions`` maps a method name to its matrix of counts (true class by
    predicted class, both in ``class_names`` order). Each cell shows its count.
    A matplotlib figure is used so it shows in exported HTML and saves as PNG.
    """
    n_methods = len(confusions)
    if n_methods == 0:
        raise ValueError("confusions is empty; pass at least one method's confusion matrix")
    columns = min(columns, n_methods)
    n_rows = -(-n_methods // columns)
    n_classes = len(class_names)
    cell = 0.45 * n_classes + 1.5
    figure, axes = plt.subplots(n_rows, columns, figsize=(cell * columns, cell * n_rows), squeeze=False)
    for axis, (method, counts) in zip(axes.flat, confusions.items(), strict=False):
        matrix = np.asarray(counts, dtype=np.float64)
        totals = matrix.sum(axis=1, keepdims=True)
        fractions = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
        axis.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
        for (row, column), count in np.ndenumerate(matrix):
            colour = "white" if fractions[row, column] > 0.6 else "black"
            axis.text(column, row, f"{int(count)}", ha="center", va="center", fontsize=8, color=colour)
        axis.set_title(method)
        axis.set_xticks(range(n_classes), class_names, rotation=60, ha="right", fontsize=8)
        axis.set_yticks(range(n_classes), class_names, fontsize=8)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
    for axis in list(axes.flat)[n_methods:]:
        axis.axis("off")
    figure.tight_layout()
    plt.close(figure)
    return figure


def retrieval_gallery(
    query_images: np.ndarray,
    neighbour_images: np.ndarray,
    query_captions: Sequence[str],
    neighbour_captions: Sequence[Sequence[str]],
    title: str | None = None,
) -> Figure:
    """Draw query galaxies in the top row and their nearest neighbours below, one column per query.

    ``query_images`` is (Q, S, S, 3) uint8 and ``neighbour_images`` is
    (Q, K, S, S, 3) uint8, best neighbour first. Captions go under each
    image, for example the label, or the similarity and label of a neighbour.
    """
    n_queries, n_neighbours = neighbour_images.shape[:2]
    if len(query_images) != n_queries or len(query_captions) != n_queries:
        raise ValueError(
            f"got {len(query_images)} query images and {len(query_captions)} captions for "
            f"{n_queries} columns of neighbours; pass one per query"
        )
    figure, axes = plt.subplots(
        n_neighbours + 1, n_queries, figsize=(1.6 * n_queries, 1.75 * (n_neighbours + 1)), squeeze=False
    )
    for column in range(n_queries):
        axes[0, column].imshow(query_images[column])
        axes[0, column].set_title(query_captions[column], fontsize=7, color="tab:red")
        for row in range(n_neighbours):
            axes[row + 1, column].imshow(neighbour_images[column, row])
            # Below the image, so that the first neighbour's caption does not read as the query's.
            axes[row + 1, column].set_xlabel(neighbour_captions[column][row], fontsize=7)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    for axis in axes[0]:
        for spine in axis.spines.values():
            spine.set_color("tab:red")
            spine.set_linewidth(2)
    axes[0, 0].set_ylabel("query", fontsize=8)
    if n_neighbours:
        axes[1, 0].set_ylabel("nearest", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    plt.close(figure)
    return figure


def class_colours(n_classes: int) -> list[str]:
    """Return one distinct plotly colour per class, the same in every map of a run."""
    palette = px.colors.qualitative.Plotly if n_classes <= 10 else px.colors.qualitative.Alphabet
    return [palette[label % len(palette)] for label in range(n_classes)]


def map_figure(
    coords: np.ndarray,
    rows: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    predicted: np.ndarray | None = None,
    places: Mapping[str, np.ndarray] | None = None,
    title: str = "",
    marker_size: float = 5.0,
) -> go.Figure:
    """Draw galaxies at map coordinates as WebGL scatter traces, one per class, with hover details.

    ``coords`` (M, 2) are the positions of embedding rows ``rows`` (M,);
    ``ids``, ``labels`` and ``predicted`` are indexed by embedding row.
    Galaxy traces have ``meta="galaxies"`` and each point's ``customdata``
    is ``[row, object id, predicted class]``. ``places`` maps "symbols" and
    "prompts" to (C, 2) positions of the class symbols and prompts, drawn as
    stars and diamonds labelled with the class name.
    """
    colours = class_colours(len(class_names))
    names = np.asarray(class_names, dtype=object)
    figure = go.Figure()
    for label, name in enumerate(class_names):
        members = np.flatnonzero(labels[rows] == label)
        member_rows = rows[members]
        guessed = names[predicted[member_rows]] if predicted is not None else np.full(len(members), "")
        figure.add_trace(
            go.Scattergl(
                x=coords[members, 0],
                y=coords[members, 1],
                mode="markers",
                name=f"{name} ({len(members)})",
                meta="galaxies",
                marker={"size": marker_size, "color": colours[label], "opacity": 0.8},
                customdata=[
                    [int(row), str(ids[row]), str(guess)]
                    for row, guess in zip(member_rows, guessed, strict=True)
                ],
                hovertemplate=(
                    f"<b>%{{customdata[1]}}</b><br>class: {name}<br>"
                    "predicted: %{customdata[2]}<extra></extra>"
                ),
            )
        )
    # Prompts of different classes often land close together, so only symbols carry a text label.
    markers = {"symbols": ("star", "symbol", "markers+text"), "prompts": ("diamond", "prompt", "markers")}
    for kind, positions in (places or {}).items():
        shape, word, mode = markers[kind]
        figure.add_trace(
            go.Scatter(
                x=positions[:, 0],
                y=positions[:, 1],
                mode=mode,
                name=f"class {word}s",
                meta=kind,
                text=list(class_names),
                textposition="top center",
                textfont={"size": 10},
                marker={
                    "symbol": shape,
                    "size": 16,
                    "color": colours,
                    "line": {"width": 1.5, "color": "black"},
                },
                hovertemplate=f"{word} of %{{text}}<extra></extra>",
            )
        )
    figure.update_layout(
        title=title,
        template="plotly_white",
        xaxis={"showticklabels": False, "title": None, "zeroline": False},
        yaxis={"showticklabels": False, "title": None, "zeroline": False, "scaleanchor": "x"},
        legend={"itemsizing": "constant"},
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        hovermode="closest",
    )
    return figure


# Shows the thumbnail of the galaxy under the pointer in a saved map page, since plotly hover labels
# hold text only. CSS background position cuts the picture from one sheet image of all thumbnails.
# The picture and the object id go in a box of their own above the pointer, kept inside the window.
# The box goes to the top right of the page when the event carries no pointer position.
# __CELLS__ maps an embedding row to its cell in the sheet.
_HOVER_THUMBNAIL_SCRIPT = """
var plot = document.getElementById("{plot_id}");
var cells = new Map(__CELLS__);
var side = __SIDE__;
var box = document.createElement("div");
box.className = "galaxalign-hover";
box.style.cssText = "position: fixed; display: none; padding: 6px; z-index: 1000;"
  + " background: white; border: 1px solid #888; font: 12px sans-serif; pointer-events: none;";
var picture = document.createElement("div");
picture.className = "galaxalign-hover-thumbnail";
picture.style.cssText = "width: " + side + "px; height: " + side + "px;"
  + " background-image: url(" + JSON.stringify(__SHEET__) + ");"
  + " background-size: " + (__COLUMNS__ * side) + "px " + (__ROWS__ * side) + "px;";
var caption = document.createElement("div");
caption.className = "galaxalign-hover-id";
box.appendChild(picture);
box.appendChild(caption);
document.body.appendChild(box);
// A page copied without its sheet says so, rather than show an empty box.
var sheetMissing = false;
var probe = new Image();
probe.onerror = function () {
  sheetMissing = true;
};
probe.src = __SHEET__;
plot.on("plotly_hover", function (event) {
  var point = event.points[0];
  if (!point || point.data.meta !== "galaxies" || !cells.has(point.customdata[0])) {
    return;
  }
  var cell = cells.get(point.customdata[0]);
  var column = cell % __COLUMNS__;
  var row = Math.floor(cell / __COLUMNS__);
  picture.style.backgroundPosition = (-column * side) + "px " + (-row * side) + "px";
  picture.style.display = sheetMissing ? "none" : "block";
  caption.textContent = point.customdata[1];
  if (sheetMissing) {
    caption.textContent += ": no thumbnail, because " + __SHEET__ + " is not beside this page";
  }
  box.dataset.row = String(point.customdata[0]);
  box.style.display = "block";
  var pointer = event.event;
  if (pointer && typeof pointer.clientX === "number") {
    // Above the pointer, clear of plotly's label, which sits level with the point; below near the top.
    var left = pointer.clientX - box.offsetWidth / 2;
    var top = pointer.clientY - 32 - box.offsetHeight;
    if (top < 0) {
      top = pointer.clientY + 32;
    }
    left = Math.min(left, window.innerWidth - box.offsetWidth);
    top = Math.min(top, window.innerHeight - box.offsetHeight);
    box.style.left = Math.max(0, left) + "px";
    box.style.top = Math.max(0, top) + "px";
    box.style.right = "";
  } else {
    box.style.left = "";
    box.style.top = "8px";
    box.style.right = "8px";
  }
});
plot.on("plotly_unhover", function () {
  box.style.display = "none";
});
"""


def hover_thumbnail_script(
    rows: np.ndarray, sheet: str, columns: int, sheet_rows: int, side: int = 128
) -> str:
    """Return the JavaScript that shows a galaxy's thumbnail when the pointer is over it in a saved map page.

    Pass it as ``post_script`` to plotly's ``write_html`` for a figure from
    :func:`map_figure`. Embedding row ``rows[i]`` has its thumbnail in cell
    ``i`` of the sheet image at URL ``sheet``, a path relative to the page.
    The sheet has ``columns`` x ``sheet_rows`` cells. The page shows a
    thumbnail ``side`` CSS pixels wide.
    """
    cells = [[int(row), i] for i, row in enumerate(rows)]
    replacements = {
        "__CELLS__": json.dumps(cells, separators=(",", ":")),
        "__SHEET__": json.dumps(sheet),
        "__COLUMNS__": str(int(columns)),
        "__ROWS__": str(int(sheet_rows)),
        "__SIDE__": str(int(side)),
    }
    script = _HOVER_THUMBNAIL_SCRIPT
    for placeholder, value in replacements.items():
        script = script.replace(placeholder, value)
    return script


def query_results_figure(
    images: np.ndarray,
    captions: Sequence[str],
    query_caption: str,
    query_image: np.ndarray | None = None,
    columns: int = 9,
) -> Figure:
    """Draw a query followed by the galaxies it found, best match first.

    ``images`` is (K, S, S, 3) uint8 with one caption each. An image query
    (a symbol drawing, an uploaded cutout) takes the first panel, framed in
    red. A text query has no image and becomes the figure's title. Panels
    wrap after ``columns`` per row.
    """
    offset = 0 if query_image is None else 1
    panels = len(images) + offset
    n_columns = min(columns, panels)
    n_rows = -(-panels // n_columns)
    figure, axes = plt.subplots(n_rows, n_columns, figsize=(1.6 * n_columns, 1.8 * n_rows), squeeze=False)
    flat = list(axes.flat)
    for axis, image, caption in zip(flat[offset:], images, captions, strict=False):
        axis.imshow(image)
        axis.set_title(caption, fontsize=7)
    for axis in flat:
        axis.set_xticks([])
        axis.set_yticks([])
    for axis in flat[panels:]:
        axis.axis("off")
    if query_image is None:
        # A long description would bury the results: the title keeps its first 200 characters.
        title = textwrap.shorten(query_caption, 200, placeholder=" …")
        figure.suptitle(textwrap.fill(title, 100), fontsize=9, color="tab:red")
    else:
        flat[0].imshow(query_image)
        flat[0].set_title(textwrap.fill(query_caption, 24), fontsize=7, color="tab:red")
        for spine in flat[0].spines.values():
            spine.set_color("tab:red")
            spine.set_linewidth(2)
    figure.tight_layout()
    plt.close(figure)
    return figure
