"""The embeddings of a finished run prepared for exploration: maps, neighbours and thumbnails by row."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.figure import Figure
from PIL import Image

from galaxalign import viz
from galaxalign.classify import zero_shot_scores
from galaxalign.embed import EmbeddingSet, read_embedding_set
from galaxalign.evaluate import gallery_queries, neighbour_gallery
from galaxalign.maps import (
    PcaGrid,
    ThumbnailSheet,
    check_method,
    embedding_map,
    grid_mosaic,
    grid_shape,
    map_title,
    pca_grid,
    place_in_map,
    sample_rows,
    save_png,
    thumbnail_sheet,
)
from galaxalign.runs import FinishedRun, embed_run, embedding_folder, load_run, load_run_images
from galaxalign.search import NeighbourIndex, SearchResult
from galaxalign.symbols import SymbolBank

logger = logging.getLogger(__name__)

# The output folder's list of files galaxalign wrote there; the copy of plotly.js the map pages load.
OUTPUTS_MANIFEST = "outputs.json"
PLOTLY_JS = "plotly.min.js"
# The map pages' thumbnail sheets are named by a hash of their pixels. A page, even renamed, then
# finds the sheet it was written with, and the pages of one sample share one sheet.
SHEET_PREFIX = "map_thumbnails-"
# scikit-learn and umap-learn take seeds that fit in 32 bits.
MAX_SEED = 2**32 - 1


@dataclass
class Exploration:
    """Galaxies of one split of a run, with what maps, neighbour search and thumbnails need.

    Row ``i`` of every per-galaxy array is the same galaxy. ``ids`` contains
    str object ids, ``labels`` int64 class indices into ``class_names``, and
    ``predicted`` the zero-shot class from the prompts (or None).
    ``pixel_rows`` gives each galaxy's row in ``pixels``, the (M, S, S, 3)
    uint8 decoded-image cache, so thumbnails never re-read image files.
    ``index`` is a neighbour index over the unit image embeddings in the same
    row order. ``text`` and ``symbols`` are (C, D) class prompt and symbol
    embeddings, None where the run has no such tower. Maps show the rows in
    ``map_rows``, a seeded sample when the split is large. ``written`` lists
    the files this exploration saved into ``output_dir``.
    """

    ids: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    index: NeighbourIndex
    pixels: np.ndarray
    pixel_rows: np.ndarray
    map_rows: np.ndarray
    predicted: np.ndarray | None = None
    text: np.ndarray | None = None
    symbols: np.ndarray | None = None
    prompts: list[str] | None = None
    run: FinishedRun | None = None
    output_dir: Path | None = None
    seed: int = 0
    _maps: dict[tuple[str, tuple[tuple[str, float], ...]], np.ndarray] = field(
        default_factory=dict, repr=False
    )
    _class_indexes: dict[frozenset[int], tuple[np.ndarray, NeighbourIndex]] = field(
        default_factory=dict, repr=False
    )
    written: list[Path] = field(default_factory=list)
    _sheet: tuple[ThumbnailSheet, str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def vectors(self) -> np.ndarray:
        """The (N, D) float32 unit image embeddings."""
        return self.index.vectors

    def thumbnails(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Return the cached images of these embedding rows, (len(rows), S, S, 3) uint8."""
        rows = np.asarray(rows, dtype=np.int64)
        return np.asarray(self.pixels[self.pixel_rows[rows]])

    def map(self, method: str, **options: float) -> np.ndarray:
        """Return (len(map_rows), 2) map coordinates by ``method`` ("tsne", "umap", "pca"), computed once.

        ``options`` go to :func:`galaxalign.maps.embedding_map` (perplexity,
        n_neighbors, min_dist).
        """
        method = check_method(method)
        key = (method, tuple(sorted(options.items())))
        if key not in self._maps:
            logger.info("computing the %s map of %d galaxies", method, len(self.map_rows))
            vectors = np.asarray(self.vectors[self.map_rows])
            self._maps[key] = embedding_map(vectors, method, seed=self.seed, **options)
        return self._maps[key]

    def placed(self, coords: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
        """Place the class symbols and prompts in a map of ``map_rows``: name → (C, 2) coordinates."""
        galaxies = np.asarray(self.vectors[self.map_rows])
        places = {}
        for name, vectors in (("symbols", self.symbols), ("prompts", self.text)):
            if vectors is not None:
                places[name] = place_in_map(coords, galaxies, vectors, k)
        return places

    def map_frame(self, coords: np.ndarray) -> pd.DataFrame:
        """Return the map as a table: object id, x, y, class and predicted class, one row per galaxy shown."""
        rows = self.map_rows
        frame = pd.DataFrame(
            {
                "object_id": self.ids[rows],
                "x": coords[:, 0],
                "y": coords[:, 1],
                "label": np.asarray(self.class_names, dtype=object)[self.labels[rows]],
            }
        )
        if self.predicted is not None:
            frame["predicted"] = np.asarray(self.class_names, dtype=object)[self.predicted[rows]]
        return frame

    def neighbours(self, row: int, k: int, classes: Sequence[int] | None = None) -> SearchResult:
        """Find the ``k`` galaxies most similar to galaxy ``row``, itself excluded, best first.

        ``classes`` restricts neighbours to those class indices; None allows
        all. Rows in the result are rows of this exploration.
        """
        row = int(row)
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} is outside the {len(self)} galaxies of this exploration")
        allowed, index = self._index_for(classes)
        if index is self.index:
            return self.index.query_ids(self.ids[row], k=k)
        if self.ids[row] in index:
            result = index.query_ids(self.ids[row], k=k)
        else:
            result = index.search(self.vectors[row], k=k)
        return dataclasses.replace(result, rows=allowed[result.rows])

    def search(self, vector: np.ndarray, k: int, classes: Sequence[int] | None = None) -> SearchResult:
        """Find the ``k`` galaxies most similar to a query vector (a symbol, a text, an uploaded image)."""
        allowed, index = self._index_for(classes)
        result = index.search(vector, k=k)
        return dataclasses.replace(result, rows=allowed[result.rows])

    def _index_for(self, classes: Sequence[int] | None) -> tuple[np.ndarray, NeighbourIndex]:
        """Return the rows allowed by a class filter and an index over them (the full index for no filter)."""
        everything = np.arange(len(self))
        if classes is None:
            return everything, self.index
        requested = frozenset(int(label) for label in classes)
        if not requested:
            raise ValueError("the class filter is empty; choose at least one class")
        if requested >= set(np.unique(self.labels).tolist()):
            return everything, self.index
        if requested not in self._class_indexes:
            allowed = np.flatnonzero(np.isin(self.labels, list(requested)))
            if allowed.size == 0:
                names = [self.class_names[label] for label in sorted(requested)]
                raise ValueError(f"no galaxy of the classes {names} is in this exploration")
            index = NeighbourIndex(
                self.vectors[allowed],
                self.ids[allowed],
                labels=self.labels[allowed],
                class_names=self.class_names,
                backend=self.index.backend,
            )
            self._class_indexes[requested] = (allowed, index)
        return self._class_indexes[requested]


def exploration_from_embeddings(
    embeddings: EmbeddingSet,
    pixels: np.ndarray,
    pixel_rows: np.ndarray,
    max_points: int = 5000,
    seed: int = 0,
    symbol_draws: int | None = None,
) -> Exploration:
    """Build an :class:`Exploration` from an embedding set and the cache rows of its galaxies.

    ``pixel_rows[i]`` is the row in ``pixels`` of the galaxy of embedding
    row ``i``. ``symbol_draws`` is how many stored drawings each class
    symbol averages (None for all of them).
    """
    if len(pixel_rows) != len(embeddings):
        raise ValueError(f"got {len(pixel_rows)} image cache rows for {len(embeddings)} embedded galaxies")
    index = NeighbourIndex.from_embedding_set(embeddings)
    text = np.asarray(embeddings.text, dtype=np.float32)
    predicted = zero_shot_scores(index.vectors, text).argmax(axis=1) if len(text) else None
    symbols = embeddings.symbols(symbol_draws) if embeddings.symbol_draws is not None else None
    prompts = embeddings.source.get("prompts")
    return Exploration(
        ids=np.asarray(embeddings.ids).astype(str),
        labels=np.asarray(embeddings.labels, dtype=np.int64),
        class_names=list(embeddings.class_names),
        index=index,
        pixels=pixels,
        pixel_rows=np.asarray(pixel_rows, dtype=np.int64),
        map_rows=sample_rows(len(embeddings), max_points, seed),
        predicted=predicted,
        text=text if len(text) else None,
        symbols=symbols,
        prompts=list(prompts) if prompts else None,
        seed=seed,
    )


def load_exploration(
    run_dir: str | Path | FinishedRun,
    split: str = "test",
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    max_points: int = 5000,
    seed: int = 0,
    embed: bool = True,
    device: str = "auto",
) -> Exploration:
    """Open one split of a finished run for the maps, the PCA grid and the neighbour widgets.

    Reads ``<run_dir>/embeddings/<split>/``. When it is missing and ``embed``
    is True, the run's model embeds the split first, as evaluate.ipynb does.
    With ``embed=False`` a missing folder raises ``FileNotFoundError`` that
    explains how to create it. ``dataset`` and
    ``data_dir`` name another catalog with the run's classes, as in
    :func:`galaxalign.evaluate.evaluate_run`. Figures go to
    ``<run_dir>/explore/<embedding folder name>/``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    sample_rows(1, max_points)
    run = run_dir if isinstance(run_dir, FinishedRun) else load_run(run_dir, device=device)
    images = load_run_images(run, dataset, data_dir)
    positions = images.positions(split)

    if embed:
        embeddings = embed_run(run, images, split)
    else:
        folder = embedding_folder(run, images, split)
        if not (folder / "manifest.json").is_file():
            raise FileNotFoundError(
                f"run {run.path} has no embeddings of split {split!r} (expected {folder}). Run "
                "notebooks/evaluate.ipynb on this run first, or pass embed=True to compute them here"
            )
        embeddings = read_embedding_set(folder)
        if embeddings.source.get("checkpoint") != run.checkpoint.name:
            logger.warning(
                "the embeddings in %s come from checkpoint %s, not the run's newest %s; "
                "pass embed=True to recompute them",
                folder,
                embeddings.source.get("checkpoint"),
                run.checkpoint.name,
            )

    position_of = {str(object_id): i for i, object_id in enumerate(images.dataset.ids[positions])}
    missing = [object_id for object_id in embeddings.ids if str(object_id) not in position_of]
    if missing:
        raise ValueError(
            f"the embeddings in {embeddings.path} contain object ids that are not in split {split!r} of "
            f"{images.dataset.source}, for example {missing[:3]}; delete that folder and embed again"
        )
    pixel_rows = images.pixel_rows[positions[[position_of[str(i)] for i in embeddings.ids]]]

    exploration = exploration_from_embeddings(embeddings, images.pixels, pixel_rows, max_points, seed)
    exploration.run = run
    exploration.output_dir = run.path / "explore" / embeddings.path.name
    logger.info(
        "exploring %d galaxies of %s (split %s); maps show %d",
        len(exploration),
        images.dataset.source,
        split,
        len(exploration.map_rows),
    )
    return exploration


def gallery_figure(exploration: Exploration, n_queries: int = 6, k: int = 5, seed: int = 0) -> Figure:
    """Draw query galaxies (one per class first) above their ``k`` nearest neighbours among all galaxies.

    ``k`` is lowered to the number of other galaxies when the split is smaller.
    """
    if len(exploration) < 2:
        raise ValueError(f"a retrieval gallery needs at least 2 galaxies, got {len(exploration)}")
    k = _fit_k(k, len(exploration) - 1)
    rows = gallery_queries(exploration.labels, n_queries, seed)
    result = exploration.index.query_ids(exploration.ids[rows], k=k)
    title = f"nearest neighbours among {len(exploration)} galaxies"
    return neighbour_gallery(
        rows,
        result,
        exploration.ids,
        exploration.labels,
        exploration.class_names,
        exploration.thumbnails,
        title,
    )


def result_captions(exploration: Exploration, result: SearchResult, query: int = 0) -> list[str]:
    """Caption each galaxy of one query's result: rank, object id, cosine similarity and class."""
    return [
        f"{rank}. {exploration.ids[row]}\n{score:.3f} {exploration.class_names[exploration.labels[row]]}"
        for rank, (row, score) in enumerate(zip(result.rows[query], result.scores[query], strict=True), 1)
    ]


def check_queries(exploration: Exploration, k: int, symbol_query: str | None, text_query: str) -> None:
    """Check explore.ipynb's search parameters before any map is computed, naming the one at fault."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer (neighbours shown), got {k!r}")
    if symbol_query is not None and symbol_query not in exploration.class_names:
        raise ValueError(
            f"symbol_query {symbol_query!r} is not a class of this run; use one of {exploration.class_names} "
            "or None for the rarest class"
        )
    if not isinstance(text_query, str) or not text_query.strip():
        raise ValueError(f"text_query must be a non-empty description, got {text_query!r}")


def symbol_drawings(exploration: Exploration) -> np.ndarray:
    """Draw one picture of each class symbol of the run at its image size, (C, S, S, 3) uint8, for display."""
    if exploration.run is None:
        raise ValueError("this exploration has no run, so its class symbols are unknown")
    run = exploration.run
    return SymbolBank(run.schema, run.config.image_size, 1, seed=0).images[:, 0]


def search_figure(
    exploration: Exploration,
    vector: np.ndarray,
    query_caption: str,
    k: int = 8,
    query_image: np.ndarray | None = None,
) -> Figure:
    """Search the galaxies nearest to a query vector and draw the query followed by them.

    ``k`` is lowered to the number of galaxies when the split is smaller.
    """
    result = exploration.search(vector, k=_fit_k(k, len(exploration)))
    images = exploration.thumbnails(result.rows[0])
    return viz.query_results_figure(images, result_captions(exploration, result), query_caption, query_image)


def map_figure(exploration: Exploration, method: str, **options: float) -> go.Figure:
    """Draw the ``method`` map of the exploration with class symbols and prompts placed in it."""
    coords = exploration.map(method, **options)
    on_map = len(exploration.map_rows)
    sample = f" (random {on_map} of {len(exploration)})" if on_map < len(exploration) else ""
    return viz.map_figure(
        coords,
        exploration.map_rows,
        exploration.ids,
        exploration.labels,
        exploration.class_names,
        exploration.predicted,
        exploration.placed(coords),
        title=f"{map_title(method)} map of {on_map} galaxies{sample}",
    )


def save_map(exploration: Exploration, method: str, figure: go.Figure) -> list[Path]:
    """Write a map as interactive HTML and its coordinates as CSV into the exploration's output folder.

    The HTML page loads plotly.js from a copy written beside it, so it opens
    without internet. It shows the thumbnail of the galaxy under the pointer,
    cut from ``map_thumbnails-<hash>.jpg``, one sheet of the map galaxies'
    thumbnails named by a hash of its pixels. Sheets that no page in the
    folder names any more are removed. Returns the paths written. Like every
    writer here, it raises ``FileExistsError`` rather than replace a file
    galaxalign did not write.
    """
    html = output_path(exploration, f"map_{method}.html")
    output_path(exploration, PLOTLY_JS)
    table = output_path(exploration, f"map_{method}.csv")
    if exploration._sheet is None:
        sheet = thumbnail_sheet(exploration.pixels, exploration.pixel_rows[exploration.map_rows])
        digest = hashlib.sha1(repr(sheet.image.shape).encode() + sheet.image.tobytes()).hexdigest()[:16]
        exploration._sheet = (sheet, f"{SHEET_PREFIX}{digest}.jpg")
    sheet, sheet_name = exploration._sheet
    sheet_path = output_path(exploration, sheet_name)
    # The maps of one exploration share the sheet, so it is encoded once unless the file went missing.
    if sheet_path not in exploration.written or not sheet_path.is_file():
        Image.fromarray(sheet.image).save(sheet_path, quality=90)
    script = viz.hover_thumbnail_script(exploration.map_rows, sheet_path.name, sheet.columns, sheet.rows)
    figure.write_html(html, include_plotlyjs="directory", post_script=script)
    exploration.map_frame(exploration.map(method)).to_csv(table, index=False)
    _record(exploration, html.name, PLOTLY_JS, sheet_path.name, table.name)
    _remove_unused_sheets(exploration)
    logger.info("wrote the %s map to %s, its thumbnails and %s", method, html, table)
    return [html, table]


def _remove_unused_sheets(exploration: Exploration) -> None:
    """Delete the thumbnail sheets galaxalign wrote that no HTML page of the output folder names."""
    folder = _output_dir(exploration)
    recorded = _recorded(folder)
    pages = [page.read_text(errors="replace") for page in folder.glob("*.html")]
    unused = {
        name for name in recorded if name.startswith(SHEET_PREFIX) and not any(name in page for page in pages)
    }
    for name in sorted(unused):
        (folder / name).unlink(missing_ok=True)
        logger.info("removed %s, which no map page in %s shows any more", name, folder)
    if unused:
        _write_manifest(folder, recorded - unused)
        exploration.written = [path for path in exploration.written if path.name not in unused]


def save_pca_grid(exploration: Exploration, max_side: int = 24, seed: int = 0) -> tuple[PcaGrid, Path]:
    """Arrange up to ``max_side`` x ``max_side`` galaxies on the PCA grid and save it as ``pca_grid.png``.

    Returns the grid and the PNG's path in the exploration's output folder.
    """
    shape = grid_shape(len(exploration), max_side)
    grid = pca_grid(exploration.vectors, shape, seed=seed)
    mosaic = grid_mosaic(grid, exploration.thumbnails(grid.rows))
    path = save_png(mosaic, output_path(exploration, "pca_grid.png"))
    _record(exploration, path.name)
    return grid, path


def save_figure(exploration: Exploration, figure: Figure, name: str) -> Path:
    """Save a matplotlib figure as PNG file ``name`` in the exploration's output folder, at 120 dpi."""
    path = output_path(exploration, name)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    _record(exploration, path.name)
    logger.info("wrote %s", path)
    return path


def output_path(exploration: Exploration, name: str) -> Path:
    """Return the path of output ``name``, raising ``FileExistsError`` if a user's file has that name.

    The output folder lists what galaxalign wrote into it in
    ``outputs.json``, so a later run replaces its own files and never a
    user's file of the same name.
    """
    folder = _output_dir(exploration)
    path = folder / name
    if path.exists() and name not in _recorded(folder):
        raise FileExistsError(
            f"{path} exists but was not written by galaxalign, so it is left alone. Move or rename it, "
            "or choose another output folder with exploration.output_dir, then run again"
        )
    return path


def _recorded(folder: Path) -> set[str]:
    manifest = folder / OUTPUTS_MANIFEST
    if not manifest.is_file():
        return set()
    try:
        return set(json.loads(manifest.read_text()).get("files", []))
    except (OSError, ValueError, AttributeError):
        logger.warning("%s is unreadable, so every file in %s is treated as a user's file", manifest, folder)
        return set()


def _record(exploration: Exploration, *names: str) -> None:
    """Add files to the output folder's list of what galaxalign wrote, and to this exploration's list."""
    folder = _output_dir(exploration)
    _write_manifest(folder, _recorded(folder) | set(names))
    for name in names:
        if folder / name not in exploration.written:
            exploration.written.append(folder / name)


def _write_manifest(folder: Path, names: set[str]) -> None:
    (folder / OUTPUTS_MANIFEST).write_text(json.dumps({"files": sorted(names)}, indent=1))


def _fit_k(k: int, available: int) -> int:
    if k > available:
        logger.info("showing %d neighbours instead of %d: the split has no more galaxies", available, k)
    return min(k, available)


def _output_dir(exploration: Exploration) -> Path:
    if exploration.output_dir is None:
        raise ValueError("this exploration has no output folder; set exploration.output_dir first")
    exploration.output_dir.mkdir(parents=True, exist_ok=True)
    return exploration.output_dir
