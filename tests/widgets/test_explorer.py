"""The neighbour explorer without a browser: clicks and hovers dispatched as plotly sends them."""

import io
import sys

import numpy as np
import pytest
from PIL import Image
from plotly.callbacks import InputDeviceState, Points
from synthetic import synthetic_exploration

from galaxalign.explore import Exploration
from galaxalign_widgets import NeighbourExplorer


def device_state() -> InputDeviceState:
    return InputDeviceState(ctrl=False, alt=False, shift=False, meta=False, button=0, buttons=1)


def galaxy_trace(explorer: NeighbourExplorer, label: int) -> tuple[int, object]:
    for position, trace in enumerate(explorer.figure.data):
        if trace.meta == "galaxies" and trace.name.startswith(f"class_{label} "):
            return position, trace
    raise AssertionError(f"no trace of class {label}")


def click(explorer: NeighbourExplorer, label: int, point: int) -> None:
    position, trace = galaxy_trace(explorer, label)
    points = Points(point_inds=[point], xs=[0.0], ys=[0.0], trace_name=trace.name, trace_index=position)
    trace._dispatch_on_click(points, device_state())


def caption_ids(explorer: NeighbourExplorer) -> list[str]:
    return [card.caption.value.split("<br>")[0].split(". ")[1] for card in explorer.neighbour_cards.children]


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_initial_state_shows_first_galaxy(exploration: Exploration):
    explorer = NeighbourExplorer(exploration, k=4)
    assert "G0000" in explorer.selected_caption.value
    expected = exploration.index.query_ids("G0000", k=4).ids[0]
    assert caption_ids(explorer) == list(expected)
    assert explorer.figure.data[-1].x == (float(exploration.map("pca")[0, 0]),)


def test_click_selects_the_galaxy(exploration: Exploration):
    explorer = NeighbourExplorer(exploration, k=3)
    # Class 1 contains rows 1, 4, 7 and so on, so its third point is row 7.
    click(explorer, label=1, point=2)
    assert explorer.selected_row == 7
    assert "G0007" in explorer.selected_caption.value
    assert caption_ids(explorer) == list(exploration.index.query_ids("G0007", k=3).ids[0])
    np.testing.assert_array_equal(png_pixels(explorer.selected_image.value), exploration.thumbnails([7])[0])
    assert (png_pixels(explorer.selected_image.value) == 7).all()
    coords = exploration.map("pca")
    assert explorer.figure.data[-1].x == (float(coords[7, 0]),)
    neighbours = explorer.result.rows[0]
    assert explorer.figure.data[-2].x == tuple(float(x) for x in coords[neighbours, 0])


def test_hover_shows_the_thumbnail(exploration: Exploration):
    explorer = NeighbourExplorer(exploration)
    position, trace = galaxy_trace(explorer, 2)
    points = Points(point_inds=[1], xs=[0.0], ys=[0.0], trace_name=trace.name, trace_index=position)
    trace._dispatch_on_hover(points, device_state())
    assert (png_pixels(explorer.hover_image.value) == 5).all()
    assert "G0005" in explorer.hover_caption.value


def test_k_slider_sets_neighbour_count(exploration: Exploration):
    explorer = NeighbourExplorer(exploration, k=4)
    explorer.k_slider.value = 9
    assert len(explorer.neighbour_cards.children) == 9
    explorer.k_slider.value = 2
    assert len(explorer.neighbour_cards.children) == 2


def test_class_filter_hides_classes(exploration: Exploration):
    explorer = NeighbourExplorer(exploration, k=5)
    explorer.class_filter.value = (1, 2)
    _, hidden = galaxy_trace(explorer, 0)
    _, kept = galaxy_trace(explorer, 1)
    assert hidden.visible == "legendonly"
    assert kept.visible is True
    assert set(exploration.labels[explorer.result.rows[0]]) <= {1, 2}
    assert "shown classes only" in explorer.status.value


def test_empty_class_filter_keeps_widget(exploration: Exploration):
    explorer = NeighbourExplorer(exploration, k=5)
    explorer.class_filter.value = ()
    assert "choose at least one class" in explorer.status.value
    click(explorer, label=0, point=1)
    assert explorer.selected_row == 3


def test_missing_umap_keeps_current_map(exploration: Exploration, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "umap", None)
    explorer = NeighbourExplorer(exploration, method="pca")
    explorer.method_menu.value = "umap"
    assert "pip install umap-learn" in explorer.status.value
    assert explorer.method_menu.value == "pca"
    assert explorer.figure.layout.title.text.startswith("PCA map")
    click(explorer, label=0, point=2)
    assert explorer.selected_row == 6


def test_switching_to_tsne_moves_highlight(exploration: Exploration):
    explorer = NeighbourExplorer(exploration, k=3, selected=10)
    explorer.method_menu.value = "tsne"
    coords = exploration.map("tsne")
    assert explorer.figure.layout.title.text.startswith("t-SNE map")
    assert explorer.figure.data[-1].x == (float(coords[10, 0]),)


def test_three_galaxies_fall_back_to_pca():
    tiny = synthetic_exploration(count=3)
    explorer = NeighbourExplorer(tiny, method="tsne", k=8)
    assert "at least 5 galaxies" in explorer.status.value
    assert explorer.method_menu.value == "pca"
    assert explorer.k_slider.max == 2
    assert len(explorer.neighbour_cards.children) == 2


def test_map_sample_rows_missing_from_highlight():
    exploration = synthetic_exploration(count=60)
    exploration.map_rows = np.arange(0, 60, 2)
    explorer = NeighbourExplorer(exploration, k=6, selected=1)
    assert explorer.figure.data[-1].x == ()
    assert "30 on the map (neighbours come from all)" in explorer.status.value
    on_map = [row for row in explorer.result.rows[0] if row % 2 == 0]
    assert len(explorer.figure.data[-2].x) == len(on_map)


def test_legend_click_updates_class_filter(exploration: Exploration):
    explorer = NeighbourExplorer(exploration, k=4)
    _, trace = galaxy_trace(explorer, 2)
    trace.visible = "legendonly"
    assert explorer.class_filter.value == (0, 1)
    assert set(exploration.labels[explorer.result.rows[0]]) <= {0, 1}


def test_click_on_hidden_class_is_ignored(exploration: Exploration):
    explorer = NeighbourExplorer(exploration, k=4)
    explorer.class_filter.value = (1, 2)
    click(explorer, label=0, point=3)
    assert explorer.selected_row == 0


def test_small_class_shows_fewer_neighbours(exploration: Exploration):
    exploration.labels[[2, 5]] = 3
    exploration.class_names.append("class_3")
    explorer = NeighbourExplorer(exploration, k=8)
    explorer.class_filter.value = (3,)
    explorer.select(2)
    assert len(explorer.neighbour_cards.children) == 1
    assert explorer.result.rows[0].tolist() == [5]
    assert "only 1 other galaxies in the shown classes" in explorer.status.value
    explorer.select(0)
    assert sorted(explorer.result.rows[0].tolist()) == [2, 5]


def test_lone_galaxy_of_class_clears_cards(exploration: Exploration):
    exploration.labels[7] = 3
    exploration.class_names.append("class_3")
    explorer = NeighbourExplorer(exploration, k=5)
    explorer.class_filter.value = (3,)
    explorer.select(7)
    assert explorer.neighbour_cards.children == ()
    assert explorer.result is None
    assert "G0007" in explorer.selected_caption.value
    assert explorer.figure.data[-2].x == ()


def test_single_galaxy_map_keeps_widget():
    exploration = synthetic_exploration(count=40)
    exploration.map_rows = exploration.map_rows[:1]
    explorer = NeighbourExplorer(exploration, k=3, method="tsne")
    assert "at least 5 galaxies" in explorer.status.value
    assert explorer.figure.layout.title.text.startswith("no map")
    assert len(explorer.neighbour_cards.children) == 3


def test_method_name_in_capitals(exploration: Exploration):
    explorer = NeighbourExplorer(exploration, method="PCA")
    assert explorer.method_menu.value == "pca"
    with pytest.raises(ValueError, match="unknown map method 'foo'"):
        NeighbourExplorer(exploration, method="foo")


def test_select_rejects_out_of_range_rows(exploration: Exploration):
    explorer = NeighbourExplorer(exploration, k=3)
    explorer.select(600)
    assert "row 600 is outside the 60 galaxies" in explorer.status.value
    assert explorer.selected_row == 0
    with pytest.raises(TypeError, match="integer row"):
        explorer.select(None)
