"""The neighbour explorer: an embedding map where clicking a galaxy shows it with its nearest neighbours."""

from __future__ import annotations

import html
import logging
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from galaxalign.explore import Exploration, map_figure
from galaxalign.maps import MAP_METHODS, MapUnavailableError, check_method, map_title
from galaxalign.search import SearchResult

from .cards import CardRow, StatusLine, message_html, png_bytes

logger = logging.getLogger(__name__)

MAX_K = 50


class NeighbourExplorer(widgets.VBox):
    """Embedding map of a run's galaxies; a click shows the galaxy enlarged with its ``k`` nearest neighbours.

    ``exploration`` comes from :func:`galaxalign.explore.load_exploration`.
    The controls set ``k``, the map (t-SNE, UMAP, PCA) and which classes are
    shown; hidden classes are left out of the neighbours too. Hovering a
    galaxy shows its thumbnail. The clicked galaxy is ringed on the map and
    its neighbours are circled. ``selected`` is the row shown first (None
    for none), so a notebook run headless shows a filled-in explorer.
    Errors (a map method that is not installed, too few galaxies) appear in
    the status line and leave the explorer usable.
    """

    def __init__(
        self,
        exploration: Exploration,
        k: int = 8,
        method: str = "pca",
        selected: int | None = 0,
        thumbnail_px: int = 96,
        enlarged_px: int = 192,
    ) -> None:
        self.exploration = exploration
        self.selected_row: int | None = None
        self.result: SearchResult | None = None
        self._trace_rows: dict[int, np.ndarray] = {}
        self._map_position = np.full(len(exploration), -1, dtype=np.int64)
        self._map_position[exploration.map_rows] = np.arange(len(exploration.map_rows))
        self._coords = np.zeros((len(exploration.map_rows), 2), dtype=np.float32)
        self._visible_classes = list(range(len(exploration.class_names)))

        max_k = max(1, min(MAX_K, len(exploration) - 1))
        self.k_slider = widgets.IntSlider(
            value=min(max(1, k), max_k), min=1, max=max_k, description="neighbours", continuous_update=False
        )
        method = check_method(method)
        self.method_menu = widgets.Dropdown(
            options=[(map_title(name), name) for name in MAP_METHODS], value=method, description="map"
        )
        self.class_filter = widgets.SelectMultiple(
            options=[(name, label) for label, name in enumerate(exploration.class_names)],
            value=tuple(range(len(exploration.class_names))),
            description="classes",
            rows=min(6, len(exploration.class_names)),
        )
        self.figure = go.FigureWidget()
        self.status = StatusLine("neighbour explorer")
        self.hover_image = widgets.Image(format="png", layout=widgets.Layout(width="128px", height="128px"))
        self.hover_caption = widgets.HTML(value=message_html("hover over a galaxy to see it here"))
        self.selected_image = widgets.Image(
            format="png", layout=widgets.Layout(width=f"{enlarged_px}px", height=f"{enlarged_px}px")
        )
        self.selected_caption = widgets.HTML(value=message_html("click a galaxy on the map"))
        self.selected_caption.add_class("galaxalign-selected")
        self.neighbour_cards = CardRow(thumbnail_px, "galaxalign-neighbour")

        controls = widgets.HBox([self.method_menu, self.k_slider, self.class_filter])
        hover_panel = widgets.VBox(
            [widgets.HTML("<b>under the pointer</b>"), self.hover_image, self.hover_caption],
            layout=widgets.Layout(width="180px"),
        )
        selected_panel = widgets.VBox(
            [widgets.HTML("<b>selected galaxy</b>"), self.selected_image, self.selected_caption],
            layout=widgets.Layout(width=f"{enlarged_px + 24}px"),
        )
        neighbours_panel = widgets.VBox([widgets.HTML("<b>nearest neighbours</b>"), self.neighbour_cards])
        super().__init__(
            [
                controls,
                widgets.HBox([self.figure, hover_panel]),
                self.status,
                widgets.HBox([selected_panel, neighbours_panel]),
            ]
        )
        self.add_class("galaxalign-explorer")

        self._method = method
        startup_error = None
        if not self._draw_map(method):
            startup_error = self.status.value
            if method == "pca" or not self._draw_map("pca"):
                # No map can be drawn (a single galaxy, say): keep an empty one so clicks and
                # selections still have their highlight traces.
                self._draw_empty_map()
            else:
                self.method_menu.value = "pca"
        self.method_menu.observe(self.status.guard(self._on_method), names="value")
        self.k_slider.observe(self.status.guard(self._on_k), names="value")
        self.class_filter.observe(self.status.guard(self._on_classes), names="value")
        if selected is not None:
            self.select(selected)
        if startup_error is not None:
            self.status.value = startup_error

    @property
    def k(self) -> int:
        return int(self.k_slider.value)

    @property
    def classes(self) -> list[int] | None:
        """The class indices shown, or None when every class is shown."""
        if len(self._visible_classes) == len(self.exploration.class_names):
            return None
        return self._visible_classes

    def select(self, row: int) -> None:
        """Show galaxy ``row`` enlarged with its nearest neighbours and ring it on the map.

        Neighbours come from the classes shown. When those classes contain
        fewer other galaxies than ``k``, all of them are shown and the status
        line reports it.
        """
        exploration = self.exploration
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)):
            raise TypeError(f"row must be an integer row of the exploration, got {row!r}")
        row = int(row)
        if not 0 <= row < len(exploration):
            self.status.report(f"row {row} is outside the {len(exploration)} galaxies shown", error=True)
            return
        available = self._neighbours_available(row)
        k = min(self.k, available)
        if k < 1:
            result = None
            neighbour_rows = np.empty(0, dtype=np.int64)
        else:
            result = exploration.neighbours(row, k, self.classes)
            neighbour_rows = result.rows[0]
        images = exploration.thumbnails(np.concatenate([[row], neighbour_rows]))

        names = exploration.class_names
        label = names[exploration.labels[row]]
        predicted = ""
        if exploration.predicted is not None:
            predicted = f"<br>predicted: {html.escape(names[exploration.predicted[row]])}"
        self.selected_image.value = png_bytes(images[0])
        self.selected_caption.value = (
            f"<b>{html.escape(str(exploration.ids[row]))}</b><br>class: {html.escape(label)}{predicted}"
        )
        scores = result.scores[0] if result is not None else np.empty(0)
        captions = [
            [f"{rank}. {exploration.ids[neighbour]}", f"{score:.3f} · {names[exploration.labels[neighbour]]}"]
            for rank, (neighbour, score) in enumerate(zip(neighbour_rows, scores, strict=True), 1)
        ]
        self.neighbour_cards.show(images[1:], captions)
        self.selected_row = row
        self.result = result
        self._highlight()
        summary = self._summary()
        if k < self.k:
            summary += f"; only {available} other galaxies in the shown classes, so {k} neighbours are shown"
        self.status.report(summary)

    def _neighbours_available(self, row: int) -> int:
        """Count the galaxies of the shown classes that can be neighbours of ``row``, itself excluded."""
        labels = self.exploration.labels
        if self.classes is None:
            return len(labels) - 1
        allowed = np.isin(labels, self.classes)
        return int(allowed.sum()) - int(allowed[row])

    def _summary(self) -> str:
        exploration = self.exploration
        on_map = len(exploration.map_rows)
        text = f"{len(exploration)} galaxies"
        if on_map < len(exploration):
            text += f", {on_map} on the map (neighbours come from all)"
        if self.classes is not None:
            text += ", neighbours from the shown classes only"
        return text

    def _draw_map(self, method: str) -> bool:
        """Replace the map by the ``method`` map; on failure report why and keep the current one."""
        try:
            figure = map_figure(self.exploration, method)
        except (MapUnavailableError, ValueError) as error:
            self.status.report(f"cannot draw the {map_title(method)} map: {error}", error=True)
            return False
        self._coords = self.exploration.map(method)

        with self.figure.batch_update():
            self.figure.data = ()
            self.figure.add_traces(list(figure.data))
            self.figure.add_trace(_ring_trace("neighbours", size=11, width=2, colour="black"))
            self.figure.add_trace(_ring_trace("selected", size=18, width=3, colour="#d62728"))
            self.figure.layout = figure.layout
            self.figure.layout.height = 560
            self.figure.layout.width = 720

        self._trace_rows = {}
        for position, trace in enumerate(self.figure.data):
            if trace.meta != "galaxies":
                continue
            rows = np.array([point[0] for point in trace.customdata], dtype=np.int64)
            self._trace_rows[position] = rows
            trace.visible = self._visibility(rows)
            trace.on_click(self.status.guard(self._on_click))
            trace.on_hover(self.status.guard(self._on_hover))
            trace.on_change(self.status.guard(self._on_legend), "visible")
        self._method = method
        self._highlight()
        return True

    def _visibility(self, rows: np.ndarray) -> bool | str:
        """Return plotly's ``visible`` for a galaxy trace of these rows: True for a class shown or no rows."""
        if not len(rows) or int(self.exploration.labels[rows[0]]) in self._visible_classes:
            return True
        return "legendonly"

    def _draw_empty_map(self) -> None:
        with self.figure.batch_update():
            self.figure.data = ()
            self.figure.add_trace(_ring_trace("neighbours", size=11, width=2, colour="black"))
            self.figure.add_trace(_ring_trace("selected", size=18, width=3, colour="#d62728"))
            self.figure.layout.title = "no map: see the message below"
        self._trace_rows = {}
        self._map_position[:] = -1

    def _highlight(self) -> None:
        """Ring the selected galaxy and circle its neighbours where they are on the map."""
        neighbours_trace, selected_trace = self.figure.data[-2], self.figure.data[-1]
        with self.figure.batch_update():
            for trace, rows in (
                (selected_trace, [] if self.selected_row is None else [self.selected_row]),
                (neighbours_trace, [] if self.result is None else list(self.result.rows[0])),
            ):
                positions = self._map_position[np.asarray(rows, dtype=np.int64)]
                positions = positions[positions >= 0]
                trace.x = self._coords[positions, 0].tolist()
                trace.y = self._coords[positions, 1].tolist()

    def _row_of(self, points: Any) -> int | None:
        """Return the embedding row of the galaxy a plotly event names, or None for no galaxy."""
        rows = self._trace_rows.get(points.trace_index)
        if not points.point_inds or rows is None:
            return None
        return int(rows[points.point_inds[0]])

    def _on_click(self, trace: Any, points: Any, state: Any) -> None:
        row = self._row_of(points)
        # A hidden class's points cannot be clicked in the browser; ignore a click event naming one.
        if row is not None and trace.visible is True:
            self.select(row)

    def _on_legend(self, trace: Any, visible: Any) -> None:
        """Follow a class hidden or shown by a click on the legend in the class filter."""
        visible = []
        for position, rows in self._trace_rows.items():
            if len(rows) and self.figure.data[position].visible is True:
                visible.append(int(self.exploration.labels[rows[0]]))
        if visible and tuple(sorted(visible)) != tuple(sorted(self.class_filter.value)):
            self.class_filter.value = tuple(sorted(visible))

    def _on_hover(self, trace: Any, points: Any, state: Any) -> None:
        row = self._row_of(points)
        if row is None:
            return
        exploration = self.exploration
        self.hover_image.value = png_bytes(exploration.thumbnails([row])[0])
        label = exploration.class_names[exploration.labels[row]]
        self.hover_caption.value = f"<b>{html.escape(str(exploration.ids[row]))}</b><br>{html.escape(label)}"

    def _on_method(self, change: dict[str, Any]) -> None:
        if change["new"] == self._method:
            return
        self.status.report(f"computing the {map_title(change['new'])} map…")
        if not self._draw_map(change["new"]):
            # Put the menu back on the map still shown; the status line keeps the error.
            message = self.status.value
            self.method_menu.value = self._method
            self.status.value = message
            return
        self.status.report(self._summary())

    def _on_k(self, change: dict[str, Any]) -> None:
        if self.selected_row is not None:
            self.select(self.selected_row)

    def _on_classes(self, change: dict[str, Any]) -> None:
        if not change["new"]:
            self.status.report("choose at least one class; the map keeps the classes it showed", error=True)
            return
        self._visible_classes = sorted(change["new"])
        with self.figure.batch_update():
            for position, rows in self._trace_rows.items():
                self.figure.data[position].visible = self._visibility(rows)
        if self.selected_row is not None:
            self.select(self.selected_row)
        else:
            self.status.report(self._summary())


def _ring_trace(name: str, size: int, width: int, colour: str) -> go.Scattergl:
    """Return an empty trace of open circles that rings galaxies on the map (filled in on selection)."""
    return go.Scattergl(
        x=[],
        y=[],
        mode="markers",
        name=name,
        meta="selection",
        hoverinfo="skip",
        marker={"size": size, "color": "rgba(0,0,0,0)", "line": {"width": width, "color": colour}},
    )
