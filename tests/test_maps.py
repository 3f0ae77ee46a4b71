"""Maps of the embedding space and the PCA grid, checked against scikit-learn and by hand."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.manifold import trustworthiness

from galaxalign import maps


def clustered_vectors(per_cluster: int = 30, clusters: int = 3, dim: int = 16, seed: int = 0):
    generator = np.random.default_rng(seed)
    centres = generator.normal(size=(clusters, dim)) * 4
    labels = np.repeat(np.arange(clusters), per_cluster)
    vectors = centres[labels] + generator.normal(size=(len(labels), dim))
    return vectors.astype(np.float32), labels


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_pca_map_matches_scikit_learn():
    vectors, _ = clustered_vectors()
    coords = maps.embedding_map(vectors, "pca")
    expected = PCA(n_components=2).fit_transform(unit(vectors.astype(np.float64)))
    # Principal components are defined up to their sign.
    for axis in range(2):
        sign = np.sign(coords[:, axis] @ expected[:, axis])
        np.testing.assert_allclose(coords[:, axis] * sign, expected[:, axis], atol=1e-5)


def test_tsne_map_keeps_neighbourhoods():
    vectors, labels = clustered_vectors()
    coords = maps.embedding_map(vectors, "tsne", seed=0)
    assert coords.shape == (90, 2)
    assert coords.dtype == np.float32
    assert trustworthiness(unit(vectors), coords, n_neighbors=5) > 0.9
    nearest = np.argsort(((coords[:, None] - coords[None]) ** 2).sum(-1), axis=1)[:, 1]
    assert (labels[nearest] == labels).mean() == 1.0


def test_tsne_map_is_seeded():
    vectors, _ = clustered_vectors(per_cluster=10)
    first = maps.embedding_map(vectors, "tsne", seed=3, perplexity=5)
    second = maps.embedding_map(vectors, "tsne", seed=3, perplexity=5)
    np.testing.assert_array_equal(first, second)


def test_tsne_rejects_three_galaxies():
    vectors, _ = clustered_vectors(per_cluster=1)
    with pytest.raises(ValueError, match="at least 5 galaxies, got 3; use the PCA map"):
        maps.embedding_map(vectors, "tsne")


def test_tsne_lowers_perplexity_for_small_catalogs():
    vectors, _ = clustered_vectors(per_cluster=2)
    with pytest.warns(UserWarning, match="using perplexity 1.7"):
        coords = maps.embedding_map(vectors, "tsne", perplexity=30)
    assert coords.shape == (6, 2)
    assert np.isfinite(coords).all()


def test_pca_map_of_three_galaxies():
    vectors, _ = clustered_vectors(per_cluster=1)
    coords = maps.embedding_map(vectors, "pca")
    assert coords.shape == (3, 2)


def test_umap_missing_names_the_package(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "umap", None)
    vectors, _ = clustered_vectors()
    with pytest.raises(maps.MapUnavailableError, match="pip install umap-learn"):
        maps.embedding_map(vectors, "umap")


def test_umap_map_keeps_neighbourhoods():
    vectors, labels = clustered_vectors()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        coords = maps.embedding_map(vectors, "umap", seed=0)
    assert coords.shape == (90, 2)
    nearest = np.argsort(((coords[:, None] - coords[None]) ** 2).sum(-1), axis=1)[:, 1]
    assert (labels[nearest] == labels).mean() > 0.95


def test_unknown_method_lists_the_methods():
    with pytest.raises(ValueError, match="tsne, umap, pca"):
        maps.embedding_map(np.eye(4), "isomap")


def test_parse_methods_reads_a_list():
    assert maps.parse_methods(" tsne, PCA ") == ["tsne", "pca"]
    with pytest.raises(ValueError, match="at least one"):
        maps.parse_methods(" , ")


def test_place_in_map_averages_nearest_galaxies():
    galaxies = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=np.float32)
    coords = np.array([[0, 0], [10, 0], [0, 10], [4, 4]], dtype=np.float32)
    query = np.array([[0.9, 0.1, 0.0]], dtype=np.float32)
    # Cosine similarities to the query: 0.994, 0.110, 0, 0.781, so the two nearest are rows 0 and 3.
    np.testing.assert_allclose(maps.place_in_map(coords, galaxies, query, k=1), [[0, 0]])
    np.testing.assert_allclose(maps.place_in_map(coords, galaxies, query, k=2), [[2, 2]])


def test_sample_rows_keeps_small_sets_whole():
    np.testing.assert_array_equal(maps.sample_rows(5, 10), np.arange(5))
    sample = maps.sample_rows(1000, 10, seed=1)
    assert len(sample) == 10
    assert len(np.unique(sample)) == 10
    assert (np.diff(sample) > 0).all()


def test_grid_shape_fits_the_catalog():
    assert maps.grid_shape(849, 24) == (24, 24)
    assert maps.grid_shape(10, 24) == (4, 4)
    with pytest.raises(ValueError, match="grid_size must be an integer from 2 to 64"):
        maps.grid_shape(10, 0)


def lattice_vectors(rows: int, columns: int) -> np.ndarray:
    """Vectors on a plane whose two principal components are the lattice axes, stretched so that PC1 is x."""
    x, y = np.meshgrid(np.arange(columns) * 3.0, np.arange(rows) * 1.0)
    points = np.column_stack([x.reshape(-1), y.reshape(-1)])
    points -= points.mean(axis=0)
    # A large constant third coordinate keeps unit scaling from bending the plane much.
    return np.column_stack([points * 0.01, np.full(len(points), 10.0)]).astype(np.float32)


def test_pca_grid_places_a_lattice_in_order():
    vectors = lattice_vectors(3, 4)
    grid = maps.pca_grid(vectors, (3, 4))
    assert grid.shape == (3, 4)
    assert sorted(grid.rows.tolist()) == list(range(12))
    components = PCA(n_components=2).fit_transform(unit(vectors.astype(np.float64)))
    first, second = components[grid.cells, 0], components[grid.cells, 1]
    # The first component runs left to right and the second bottom to top, whatever their signs.
    sign_first = np.sign(first[0, -1] - first[0, 0])
    sign_second = np.sign(second[0, 0] - second[-1, 0])
    assert (np.diff(first * sign_first, axis=1) > 0).all()
    assert (np.diff(second * sign_second, axis=0) < 0).all()
    assert grid.explained[0] > grid.explained[1]


def test_pca_grid_samples_when_cells_are_few():
    vectors, _ = clustered_vectors(per_cluster=20)
    grid = maps.pca_grid(vectors, (4, 4), seed=0)
    assert (grid.cells >= 0).all()
    assert len(np.unique(grid.rows)) == 16


def test_pca_grid_leaves_empty_cells():
    vectors, _ = clustered_vectors(per_cluster=3)
    grid = maps.pca_grid(vectors, (4, 4))
    assert (grid.cells >= 0).sum() == 9
    assert sorted(grid.rows.tolist()) == list(range(9))


def test_pca_grid_rejects_huge_grids():
    with pytest.raises(ValueError, match="at most 4096"):
        maps.pca_grid(np.eye(5), (65, 65))


def test_grid_mosaic_pixels(tmp_path: Path):
    grid = maps.PcaGrid(cells=np.array([[2, -1], [0, 1]]), explained=np.array([0.5, 0.2]))
    thumbnails = np.stack([np.full((3, 3, 3), value, dtype=np.uint8) for value in (10, 20, 30)])
    # grid.rows lists the filled cells row by row: 2, 0, 1.
    mosaic = maps.grid_mosaic(grid, thumbnails[grid.rows], gap=1, gap_grey=64)
    assert mosaic.shape == (7, 7, 3)
    assert (mosaic[0:3, 0:3] == 30).all()
    assert (mosaic[0:3, 4:7] == 0).all()
    assert (mosaic[4:7, 0:3] == 10).all()
    assert (mosaic[4:7, 4:7] == 20).all()
    assert (mosaic[3, :] == 64).all()
    assert (mosaic[:, 3] == 64).all()

    path = maps.save_png(mosaic, tmp_path / "sub" / "grid.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), mosaic)


def test_thumbnail_sheet_tiles_row_by_row():
    generator = np.random.default_rng(0)
    thumbnails = generator.integers(0, 256, size=(5, 4, 4, 3), dtype=np.uint8)
    sheet = maps.thumbnail_sheet(thumbnails, cell=64)
    reordered = maps.thumbnail_sheet(thumbnails, rows=np.array([4, 0]), cell=64)
    assert (reordered.columns, reordered.rows) == (2, 1)
    np.testing.assert_array_equal(reordered.image[:, 0:4], thumbnails[4])
    np.testing.assert_array_equal(reordered.image[:, 4:8], thumbnails[0])
    # Five thumbnails take ceil(sqrt(5)) = 3 columns and 2 rows of 4 px cells, never enlarged.
    assert (sheet.columns, sheet.rows, sheet.cell) == (3, 2, 4)
    assert sheet.image.shape == (8, 12, 3)
    np.testing.assert_array_equal(sheet.image[0:4, 8:12], thumbnails[2])
    np.testing.assert_array_equal(sheet.image[4:8, 4:8], thumbnails[4])
    assert (sheet.image[4:8, 8:12] == 0).all()


def test_thumbnail_sheet_shrinks_cells_to_fit():
    thumbnails = np.stack([np.full((8, 8, 3), 10 * i, dtype=np.uint8) for i in range(10)])
    thumbnails[3, :4] = 100
    thumbnails[3, 4:] = 200
    sheet = maps.thumbnail_sheet(thumbnails, cell=6, max_side=12)
    # Four columns in at most 12 px leave 3 px cells; the box filter averages 8 px into 3.
    assert (sheet.columns, sheet.rows, sheet.cell) == (4, 3, 3)
    assert sheet.image.shape == (9, 12, 3)
    assert (sheet.image[6:9, 3:6] == 90).all()
    cell = sheet.image[0:3, 9:12, 0]
    assert (cell[0] == 100).all()
    assert (cell[2] == 200).all()
    assert 100 < cell[1, 0] < 200


def test_thumbnail_sheet_refuses_what_cannot_fit():
    with pytest.raises(ValueError, match="no thumbnails"):
        maps.thumbnail_sheet(np.zeros((0, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="do not fit in a sheet of at most 4 px"):
        maps.thumbnail_sheet(np.zeros((30, 8, 8, 3), dtype=np.uint8), max_side=4)
