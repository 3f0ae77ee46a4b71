"""Two-dimensional maps of an embedding space (t-SNE, UMAP, PCA) and the PCA grid of galaxy thumbnails."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from galaxalign.metrics import normalize_rows

logger = logging.getLogger(__name__)

MAP_METHODS = ("tsne", "umap", "pca")
METHOD_TITLES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}

# t-SNE with fewer points than this has no meaningful neighbourhoods: even the
# smallest perplexity it accepts (1) then spans most of the catalog.
MIN_TSNE_POINTS = 5
# UMAP builds a k-nearest-neighbour graph with at least 2 neighbours and a
# spectral layout, which needs a few more points than neighbours.
MIN_UMAP_POINTS = 5
# Cells of the PCA grid: the assignment solves a square problem of this size,
# about 10 s for 4,096 cells on one CPU core.
MAX_GRID_CELLS = 4096


class MapUnavailableError(RuntimeError):
    """A map method whose package is not installed."""


def map_title(method: str) -> str:
    """Return the usual spelling of a map method, for example "t-SNE" for "tsne"."""
    return METHOD_TITLES.get(method, method)


def check_method(method: str) -> str:
    """Return ``method`` lower-cased, or raise ``ValueError`` when it is not one of MAP_METHODS."""
    if not isinstance(method, str) or method.lower() not in MAP_METHODS:
        raise ValueError(f"unknown map method {method!r}; use one of {', '.join(MAP_METHODS)}")
    return method.lower()


def parse_methods(methods: str) -> list[str]:
    """Parse a comma-separated list of map methods such as "tsne,umap,pca" (a notebook parameter)."""
    names = [name.strip() for name in str(methods).split(",") if name.strip()]
    if not names:
        raise ValueError(f"maps must name at least one of {', '.join(MAP_METHODS)}, got {methods!r}")
    return [check_method(name) for name in names]


def embedding_map(
    vectors: np.ndarray,
    method: str = "tsne",
    seed: int = 0,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
) -> np.ndarray:
    """Project embeddings to two dimensions for a map; return (N, 2) float32 coordinates.

    ``vectors`` is (N, D), one galaxy per row, compared by cosine similarity:
    rows are scaled to unit length first. ``method`` is "tsne" (scikit-learn,
    Barnes-Hut), "umap" (umap-learn, cosine metric) or "pca". When the
    catalog is too small for ``perplexity`` or ``n_neighbors``, they are
    lowered with a warning. Raises ``ValueError`` for catalogs too small for
    the method and :class:`MapUnavailableError` when umap-learn is missing.
    """
    method = check_method(method)
    unit = normalize_rows(np.asarray(vectors), "embeddings of the map")
    count = unit.shape[0]
    if method == "pca":
        if count < 2:
            raise ValueError(f"a PCA map needs at least 2 galaxies, got {count}")
        return _pca(unit, 2, seed)
    if method == "tsne":
        return _tsne(unit, seed, perplexity)
    return _umap(unit, seed, n_neighbors, min_dist)


def _pca(unit: np.ndarray, components: int, seed: int) -> np.ndarray:
    usable = min(components, unit.shape[0], unit.shape[1])
    coords = np.zeros((unit.shape[0], components), dtype=np.float32)
    coords[:, :usable] = PCA(n_components=usable, random_state=seed).fit_transform(unit)
    return coords


def _tsne(unit: np.ndarray, seed: int, perplexity: float) -> np.ndarray:
    count = unit.shape[0]
    if count < MIN_TSNE_POINTS:
        raise ValueError(
            f"a t-SNE map needs at least {MIN_TSNE_POINTS} galaxies, got {count}; use the PCA map for so few"
        )
    # scikit-learn requires perplexity < N; (N - 1) / 3 is the usual choice for small sets.
    if perplexity >= count:
        lowered = max(1.0, (count - 1) / 3)
        warnings.warn(
            f"t-SNE perplexity {perplexity} needs more than {perplexity:g} galaxies but the map has {count}; "
            f"using perplexity {lowered:.1f}",
            stacklevel=3,
        )
        perplexity = lowered
    # Euclidean distance between unit vectors orders neighbours as cosine similarity does,
    # and lets scikit-learn use its fast tree search.
    model = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return model.fit_transform(unit).astype(np.float32)


def _umap(unit: np.ndarray, seed: int, n_neighbors: int, min_dist: float) -> np.ndarray:
    try:
        import umap
    except ImportError as error:
        raise MapUnavailableError(
            "the UMAP map needs the umap-learn package, which is not installed: "
            "run `pip install umap-learn`, or choose the t-SNE or PCA map"
        ) from error
    count = unit.shape[0]
    if count < MIN_UMAP_POINTS:
        raise ValueError(
            f"a UMAP map needs at least {MIN_UMAP_POINTS} galaxies, got {count}; use the PCA map for so few"
        )
    if n_neighbors >= count:
        lowered = max(2, count - 1)
        warnings.warn(
            f"UMAP n_neighbors {n_neighbors} needs more galaxies than the map's {count}; using {lowered}",
            stacklevel=3,
        )
        n_neighbors = lowered
    # A spectral layout of a handful of points fails on its eigenproblem; a random start does not.
    init = "spectral" if count > 2 * n_neighbors else "random"
    reducer = umap.UMAP(
        n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine", random_state=seed, init=init
    )
    with warnings.catch_warnings():
        # A fixed random_state makes UMAP single-threaded, which it reports on every call.
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        return np.asarray(reducer.fit_transform(unit), dtype=np.float32)


def place_in_map(
    coords: np.ndarray, galaxy_vectors: np.ndarray, query_vectors: np.ndarray, k: int = 10
) -> np.ndarray:
    """Place extra vectors (class symbols, prompts) in a galaxy map; return (M, 2) float32 coordinates.

    Each query lands at the mean map position of its ``k`` galaxies of
    highest cosine similarity. t-SNE cannot map new points, and CLIP's text
    and image embeddings sit apart (the modality gap), so a joint projection
    would put all prompts in one corner. This placement shows which
    galaxies a symbol or prompt points to instead.
    """
    galaxies = normalize_rows(np.asarray(galaxy_vectors), "galaxy embeddings")
    queries = normalize_rows(np.atleast_2d(np.asarray(query_vectors)), "symbol or prompt embeddings")
    if coords.shape[0] != galaxies.shape[0]:
        raise ValueError(f"got {coords.shape[0]} map positions for {galaxies.shape[0]} galaxy vectors")
    k = min(k, galaxies.shape[0])
    scores = queries @ galaxies.T
    nearest = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return coords[nearest].mean(axis=1).astype(np.float32)


def sample_rows(count: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Pick at most ``max_points`` of ``count`` rows at random (seeded), in ascending order."""
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise ValueError(f"max_points must be a positive integer, got {max_points!r}")
    if count <= max_points:
        return np.arange(count)
    chosen = np.random.default_rng(seed).choice(count, size=max_points, replace=False)
    return np.sort(chosen)


@dataclass
class PcaGrid:
    """Galaxies assigned to the cells of a regular grid by their first two principal components.

    ``cells`` is (rows, columns) int64: the embedding row of the galaxy in
    each cell, or -1 for an empty cell. The first principal component runs
    left to right and the second bottom to top. ``explained`` is the share
    of the variance of the unit embeddings each of the two components carries.
    """

    cells: np.ndarray
    explained: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.cells.shape[0]), int(self.cells.shape[1])

    @property
    def rows(self) -> np.ndarray:
        """The embedding rows placed in the grid, in cell order (row-major, empty cells left out)."""
        flat = self.cells.reshape(-1)
        return flat[flat >= 0]


def grid_shape(count: int, max_side: int) -> tuple[int, int]:
    """Return (rows, columns) of a square grid for ``count`` galaxies, at most ``max_side`` on each side."""
    largest = math.isqrt(MAX_GRID_CELLS)
    integer = isinstance(max_side, (int, np.integer)) and not isinstance(max_side, bool)
    if not integer or not 2 <= max_side <= largest:
        raise ValueError(f"grid_size must be an integer from 2 to {largest} cells per side, got {max_side!r}")
    side = min(int(max_side), max(2, math.ceil(math.sqrt(count))))
    return side, side


def pca_grid(vectors: np.ndarray, shape: tuple[int, int], seed: int = 0) -> PcaGrid:
    """Assign galaxies to the cells of a grid so that each cell contains one galaxy and neighbours look alike.

    ``vectors`` is (N, D). When N exceeds the cells, a seeded random sample
    of galaxies fills them. The first two principal components of the unit
    vectors are scaled to span the grid, and the assignment of galaxies to
    cell centres with the least total squared distance is solved exactly
    (scipy's ``linear_sum_assignment``).
    """
    n_rows, n_columns = shape
    n_cells = n_rows * n_columns
    if n_cells > MAX_GRID_CELLS:
        raise ValueError(
            f"a {n_rows} x {n_columns} grid has {n_cells} cells; use at most {MAX_GRID_CELLS} (64 x 64)"
        )
    unit = normalize_rows(np.asarray(vectors), "embeddings of the PCA grid")
    if unit.shape[0] < 2:
        raise ValueError(f"a PCA grid needs at least 2 galaxies, got {unit.shape[0]}")
    chosen = sample_rows(unit.shape[0], n_cells, seed)

    pca = PCA(n_components=min(2, unit.shape[1]), random_state=seed)
    points = pca.fit_transform(unit[chosen]).astype(np.float64)
    explained = np.zeros(2)
    explained[: points.shape[1]] = pca.explained_variance_ratio_
    if points.shape[1] < 2:
        points = np.column_stack([points, np.zeros(len(points))])
    points = _scale_to_grid(points, n_rows, n_columns)

    column_of_cell, row_of_cell = np.meshgrid(np.arange(n_columns), np.arange(n_rows))
    centres = np.column_stack([column_of_cell.reshape(-1), (n_rows - 1 - row_of_cell).reshape(-1)])
    cost = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    galaxy_index, cell_index = linear_sum_assignment(cost)

    cells = np.full(n_cells, -1, dtype=np.int64)
    cells[cell_index] = chosen[galaxy_index]
    return PcaGrid(cells.reshape(n_rows, n_columns), explained)


def _scale_to_grid(points: np.ndarray, n_rows: int, n_columns: int) -> np.ndarray:
    """Scale each axis of (N, 2) points to span [0, columns - 1] and [0, rows - 1]."""
    scaled = np.empty_like(points)
    for axis, cells in ((0, n_columns), (1, n_rows)):
        low, high = points[:, axis].min(), points[:, axis].max()
        span = high - low
        scaled[:, axis] = (points[:, axis] - low) / span * (cells - 1) if span > 0 else (cells - 1) / 2
    return scaled


def grid_mosaic(grid: PcaGrid, thumbnails: np.ndarray, gap: int = 1, gap_grey: int = 64) -> np.ndarray:
    """Tile the thumbnails of a PCA grid into one uint8 RGB image; empty cells stay black.

    ``thumbnails`` is (len(grid.rows), S, S, 3) uint8, in the order of
    :attr:`PcaGrid.rows`. Cells are ``gap`` pixels apart, on a grey of
    value ``gap_grey`` that sets them off from the dark sky of the cutouts.
    """
    placed = grid.rows
    if thumbnails.shape[0] != placed.shape[0]:
        raise ValueError(f"got {thumbnails.shape[0]} thumbnails for {placed.shape[0]} filled cells")
    n_rows, n_columns = grid.shape
    size = thumbnails.shape[1]
    step = size + gap
    mosaic = np.full((n_rows * step - gap, n_columns * step - gap, 3), gap_grey, dtype=np.uint8)
    for row, column in np.argwhere(grid.cells < 0):
        mosaic[row * step : row * step + size, column * step : column * step + size] = 0
    filled = np.argwhere(grid.cells >= 0)
    for (row, column), image in zip(filled, thumbnails, strict=True):
        mosaic[row * step : row * step + size, column * step : column * step + size] = image
    return mosaic


@dataclass(frozen=True)
class ThumbnailSheet:
    """Thumbnails tiled row by row into one image, so a web page loads them all in one request.

    Thumbnail ``i`` sits in column ``i % columns`` and row ``i // columns``
    of ``image``, in a ``cell`` x ``cell`` pixel square.
    """

    image: np.ndarray
    columns: int
    cell: int

    @property
    def rows(self) -> int:
        return self.image.shape[0] // self.cell


def thumbnail_sheet(
    images: np.ndarray, rows: np.ndarray | None = None, cell: int = 64, max_side: int = 8192
) -> ThumbnailSheet:
    """Tile images ``rows`` of (M, S, S, 3) uint8 ``images`` into a :class:`ThumbnailSheet`.

    ``rows`` defaults to all images. They are read one at a time, so
    ``images`` may be a memory-mapped image cache far larger than the sheet.
    Cells are at most ``cell`` px wide, and shrink below ``cell`` (and below
    ``S``, never enlarged) where needed to keep the sheet's sides within
    ``max_side`` pixels, a size browsers decode without trouble. Empty cells
    at the end stay black.
    """
    rows = np.arange(images.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    count = rows.shape[0]
    if count == 0:
        raise ValueError("no thumbnails to tile")
    columns = math.ceil(math.sqrt(count))
    side = min(cell, images.shape[1], max_side // columns)
    if side < 1:
        raise ValueError(f"{count} thumbnails do not fit in a sheet of at most {max_side} px a side")
    sheet = np.zeros((math.ceil(count / columns) * side, columns * side, 3), dtype=np.uint8)
    for i, image_row in enumerate(rows):
        thumbnail = np.asarray(images[image_row])
        if thumbnail.shape[0] != side:
            thumbnail = np.asarray(Image.fromarray(thumbnail).resize((side, side), Image.Resampling.BOX))
        row, column = divmod(i, columns)
        sheet[row * side : (row + 1) * side, column * side : (column + 1) * side] = thumbnail
    return ThumbnailSheet(image=sheet, columns=columns, cell=side)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 RGB array as a PNG file, creating its folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)
    logger.info("wrote %s (%d x %d px)", path, image.shape[1], image.shape[0])
    return path
