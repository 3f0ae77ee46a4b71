"""Exploring a finished run: embeddings by row, class-filtered neighbours, maps and the PCA grid on disk."""

import ast
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from synthetic import synthetic_exploration

from galaxalign import explore
from galaxalign.embed import read_embedding_set
from galaxalign.runs import load_run, load_run_images
from galaxalign.search import NeighbourIndex

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exploration(finished_run: Path) -> explore.Exploration:
    return explore.load_exploration(finished_run, split="all", device="cpu", max_points=40)


def test_run_without_embeddings_names_the_fix(finished_run: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns("embeddings", "explore"))
    with pytest.raises(FileNotFoundError, match="no embeddings of split 'all'.*evaluate.ipynb.*embed=True"):
        explore.load_exploration(run_dir, split="all", embed=False, device="cpu")


def test_exploration_rows_follow_the_embeddings(exploration: explore.Exploration, finished_run: Path):
    stored = read_embedding_set(finished_run / "embeddings" / "all")
    assert len(exploration) == 48
    np.testing.assert_array_equal(exploration.ids, stored.ids.astype(str))
    np.testing.assert_array_equal(exploration.labels, stored.labels)
    np.testing.assert_allclose(exploration.vectors, stored.images, atol=1e-6)
    assert exploration.output_dir == finished_run / "explore" / "all"


def test_thumbnails_are_the_cached_images(exploration: explore.Exploration, finished_run: Path):
    images = load_run_images(load_run(finished_run, device="cpu"))
    rows = [0, 7, 47]
    expected = images.thumbnails([str(exploration.ids[row]) for row in rows])
    np.testing.assert_array_equal(exploration.thumbnails(rows), expected)


def test_predicted_is_zero_shot_by_prompts(exploration: explore.Exploration):
    prompts = exploration.text / np.linalg.norm(exploration.text, axis=1, keepdims=True)
    scores = exploration.vectors @ prompts.T
    np.testing.assert_array_equal(exploration.predicted, scores.argmax(axis=1))


def test_map_sample_is_max_points(exploration: explore.Exploration):
    assert len(exploration.map_rows) == 40
    coords = exploration.map("pca")
    assert coords.shape == (40, 2)
    assert exploration.map("pca") is coords


def test_neighbours_match_the_index(exploration: explore.Exploration):
    index = NeighbourIndex(exploration.vectors, exploration.ids, labels=exploration.labels)
    expected = index.query_ids(exploration.ids[5], k=4)
    result = exploration.neighbours(5, k=4)
    np.testing.assert_array_equal(result.rows, expected.rows)
    np.testing.assert_array_equal(result.ids, expected.ids)


def test_class_filter_restricts_neighbours(exploration: explore.Exploration):
    allowed = [0, 3]
    row = int(np.flatnonzero(exploration.labels == 0)[0])
    result = exploration.neighbours(row, k=3, classes=allowed)
    members = np.flatnonzero(np.isin(exploration.labels, allowed) & (np.arange(len(exploration)) != row))
    scores = exploration.vectors[members] @ exploration.vectors[row]
    expected = members[np.argsort(-scores, kind="stable")[:3]]
    np.testing.assert_array_equal(result.rows[0], expected)
    assert set(exploration.labels[result.rows[0]]) <= set(allowed)


def test_class_filter_from_a_hidden_galaxy(exploration: explore.Exploration):
    row = int(np.flatnonzero(exploration.labels == 0)[0])
    other = [label for label in np.unique(exploration.labels) if label != 0]
    result = exploration.neighbours(row, k=2, classes=other)
    assert 0 not in set(exploration.labels[result.rows[0]])


def test_empty_class_filter_is_rejected(exploration: explore.Exploration):
    with pytest.raises(ValueError, match="choose at least one class"):
        exploration.neighbours(0, k=2, classes=[])


def test_save_map_writes_html_and_coordinates(exploration: explore.Exploration):
    figure = explore.map_figure(exploration, "pca")
    html, table = explore.save_map(exploration, "pca", figure)
    assert "plotly.min.js" in html.read_text()
    assert (html.parent / "plotly.min.js").is_file()
    frame = pd.read_csv(table, dtype={"object_id": str})
    coords = exploration.map("pca")
    assert list(frame["object_id"]) == list(exploration.ids[exploration.map_rows])
    np.testing.assert_allclose(frame[["x", "y"]].to_numpy(), coords, rtol=1e-6)
    names = np.asarray(exploration.class_names)
    assert list(frame["label"]) == list(names[exploration.labels[exploration.map_rows]])


def save_quiet_map(exploration: explore.Exploration, method: str) -> Path:
    """Save a map of a few synthetic galaxies, where t-SNE warns that it lowers the perplexity."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*perplexity", category=UserWarning)
        html, _ = explore.save_map(exploration, method, explore.map_figure(exploration, method))
    return html


def sheet_name(page: Path) -> str:
    """Return the name of the thumbnail sheet a map page loads."""
    names = re.findall(r'"(map_thumbnails-[0-9a-f]{16}\.jpg)"', page.read_text())
    assert len(set(names)) == 1, names
    return names[0]


def test_map_pages_share_one_sheet(tmp_path: Path):
    tiny = synthetic_exploration(count=12, size=8)
    tiny.output_dir = tmp_path
    tiny.map_rows = np.array([5, 0, 11, 7, 2])
    pages = [save_quiet_map(tiny, method) for method in ("pca", "tsne")]
    for page in pages:
        # Map galaxy i's row to cell i of the 3 x 2 sheet of 8 px cells, shown 128 px wide.
        assert "new Map([[5,0],[0,1],[11,2],[7,3],[2,4]])" in page.read_text()
        assert '(3 * side) + "px " + (2 * side) + "px;"' in page.read_text()
    name = sheet_name(pages[0])
    assert sheet_name(pages[1]) == name
    assert sorted(path.name for path in tmp_path.glob("*.jpg")) == [name]
    sheet = np.asarray(Image.open(tmp_path / name).convert("RGB")).astype(int)
    assert sheet.shape == (16, 24, 3)
    # The synthetic thumbnail of row i is uniformly i; JPEG keeps a flat 8 x 8 block within a level.
    for cell, row in enumerate(tiny.map_rows):
        top, left = 8 * (cell // 3), 8 * (cell % 3)
        assert np.abs(sheet[top : top + 8, left : left + 8] - row).max() <= 1
    manifest = json.loads((tmp_path / "outputs.json").read_text())["files"]
    assert name in manifest


def test_sheet_cleanup_keeps_renamed_pages(tmp_path: Path):
    first = synthetic_exploration(count=12, size=8)
    first.output_dir = tmp_path
    first.map_rows = np.array([3, 4, 5, 6, 7])
    old_sheet = sheet_name(save_quiet_map(first, "pca"))
    (tmp_path / "map_pca.html").rename(tmp_path / "map_pca_first_sample.html")
    save_quiet_map(first, "tsne")

    # A later exploration of the same folder with another sample redraws both maps.
    second = synthetic_exploration(count=12, size=8)
    second.output_dir = tmp_path
    second.map_rows = np.array([11, 10, 9, 8, 2, 1])
    new_sheet = sheet_name(save_quiet_map(second, "pca"))
    assert new_sheet != old_sheet
    # The renamed page of the first sample still names its sheet, so it stays.
    assert sheet_name(tmp_path / "map_pca_first_sample.html") == old_sheet
    assert (tmp_path / old_sheet).is_file()

    (tmp_path / "map_pca_first_sample.html").unlink()
    save_quiet_map(second, "tsne")
    assert sorted(path.name for path in tmp_path.glob("*.jpg")) == [new_sheet]
    manifest = json.loads((tmp_path / "outputs.json").read_text())["files"]
    assert old_sheet not in manifest
    assert [path.name for path in second.written].count(new_sheet) == 1


def test_user_sheet_of_the_same_name_is_kept(tmp_path: Path):
    tiny = synthetic_exploration(count=12)
    tiny.output_dir = tmp_path
    name = sheet_name(save_quiet_map(tiny, "pca"))
    (tmp_path / "outputs.json").unlink()
    (tmp_path / name).write_bytes(b"my own sheet")
    (tmp_path / "map_pca.html").unlink()
    (tmp_path / "plotly.min.js").unlink()
    (tmp_path / "map_pca.csv").unlink()
    with pytest.raises(FileExistsError, match=f"{name} exists"):
        save_quiet_map(tiny, "pca")
    assert (tmp_path / name).read_bytes() == b"my own sheet"
    assert not (tmp_path / "map_pca.html").exists()


def test_map_figure_traces(exploration: explore.Exploration):
    figure = explore.map_figure(exploration, "pca")
    galaxies = [trace for trace in figure.data if trace.meta == "galaxies"]
    assert sum(len(trace.x) for trace in galaxies) == 40
    assert all(trace.type == "scattergl" for trace in galaxies)
    row, object_id, _ = galaxies[0].customdata[0]
    assert exploration.ids[row] == object_id
    kinds = [trace.meta for trace in figure.data if trace.meta != "galaxies"]
    assert kinds == ["symbols", "prompts"]


def test_pca_grid_png_holds_the_thumbnails(exploration: explore.Exploration):
    grid, path = explore.save_pca_grid(exploration, max_side=5)
    assert path == exploration.output_dir / "pca_grid.png"
    assert grid.shape == (5, 5)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    size = exploration.pixels.shape[1]
    step = size + 1
    for cell_row, cell_column in [(0, 0), (2, 3), (4, 4)]:
        row = grid.cells[cell_row, cell_column]
        top, left = cell_row * step, cell_column * step
        np.testing.assert_array_equal(
            pixels[top : top + size, left : left + size], exploration.thumbnails([row])[0]
        )


def test_gallery_and_search_figures(exploration: explore.Exploration, tmp_path: Path):
    gallery = explore.gallery_figure(exploration, n_queries=3, k=2)
    assert len(gallery.axes) == 9
    figure = explore.search_figure(exploration, exploration.text[0], "a text", k=4)
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    result = exploration.search(exploration.text[0], k=4)
    assert titles == explore.result_captions(exploration, result)
    assert figure._suptitle.get_text() == "a text"


def test_three_galaxies_fit_gallery_and_search():
    tiny = synthetic_exploration(count=3)
    gallery = explore.gallery_figure(tiny, n_queries=6, k=5)
    # Three queries, each above its two neighbours: k is lowered to the galaxies available.
    assert len(gallery.axes) == 9
    figure = explore.search_figure(tiny, tiny.vectors[0], "a text", k=8)
    assert [axis.get_title().split(".")[0] for axis in figure.axes] == ["1", "2", "3"]


def test_library_never_imports_widgets():
    importers = []
    for path in (REPOSITORY / "galaxalign").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] in ("galaxalign_widgets", "widgets", "ipywidgets") for name in names):
                importers.append(str(path.relative_to(REPOSITORY)))
    assert importers == []


def test_user_file_is_never_replaced(tmp_path: Path):
    tiny = synthetic_exploration(count=12)
    tiny.output_dir = tmp_path / "explore"
    tiny.output_dir.mkdir()
    mine = tiny.output_dir / "pca_grid.png"
    mine.write_bytes(b"my own picture")
    with pytest.raises(FileExistsError, match="pca_grid.png exists but was not written by galaxalign"):
        explore.save_pca_grid(tiny, max_side=3)
    assert mine.read_bytes() == b"my own picture"

    mine.unlink()
    _, path = explore.save_pca_grid(tiny, max_side=3)
    first = path.read_bytes()
    _, again = explore.save_pca_grid(tiny, max_side=2)
    assert again == path
    assert again.read_bytes() != first
    assert tiny.written == [path]


def test_user_plotly_copy_is_kept(tmp_path: Path):
    tiny = synthetic_exploration(count=12)
    tiny.output_dir = tmp_path
    (tmp_path / "plotly.min.js").write_text("// my build")
    with pytest.raises(FileExistsError, match="plotly.min.js exists"):
        explore.save_map(tiny, "pca", explore.map_figure(tiny, "pca"))
    assert (tmp_path / "plotly.min.js").read_text() == "// my build"


def test_seed_out_of_range_is_rejected(finished_run: Path):
    for seed in (-1, 2**32, 1.5):
        with pytest.raises(ValueError, match="seed must be an integer from 0 to 4294967295"):
            explore.load_exploration(finished_run, split="all", seed=seed, device="cpu")


def test_check_queries_names_parameter():
    tiny = synthetic_exploration(count=12)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        explore.check_queries(tiny, 0, None, "a text")
    with pytest.raises(ValueError, match="symbol_query 'spiral' is not a class of this run"):
        explore.check_queries(tiny, 3, "spiral", "a text")
    with pytest.raises(ValueError, match="text_query must be a non-empty description"):
        explore.check_queries(tiny, 3, None, "  ")
    explore.check_queries(tiny, 3, "class_1", "a text")


def test_long_text_query_title_is_shortened():
    tiny = synthetic_exploration(count=12)
    figure = explore.search_figure(tiny, tiny.vectors[0], "spiral " * 500, k=3)
    title = figure._suptitle.get_text()
    assert len(title) <= 205
    assert title.endswith("…")
