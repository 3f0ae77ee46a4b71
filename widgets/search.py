"""The search panel: find the galaxies nearest to a class symbol, an uploaded image or a typed description."""

from __future__ import annotations

import html
import logging
import tempfile
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np

from galaxalign.data.images import UnreadableImageError, decode_image_file, resize
from galaxalign.explore import Exploration, symbol_drawings
from galaxalign.query import QueryEncoder

from .cards import CardRow, StatusLine, png_bytes

logger = logging.getLogger(__name__)

GALAXY_IMAGE, SYMBOL_DRAWING = "galaxy image", "symbol drawing"


class SearchPanel(widgets.VBox):
    """Search a run's galaxies by class symbol, by an uploaded galaxy image or drawing, or by text.

    ``exploration`` comes from :func:`galaxalign.explore.load_exploration`
    and must hold the run (its towers encode the queries). ``encoder`` is
    built from it when None. The panel starts with a search by the first
    class symbol (or the first prompt for a run without symbols), so a
    notebook run headless shows results. A file that is not an image gives a
    message in the status line and the panel stays usable.
    """

    def __init__(
        self,
        exploration: Exploration,
        encoder: QueryEncoder | None = None,
        k: int = 8,
        thumbnail_px: int = 96,
        initial: str | None = "symbol",
    ) -> None:
        if encoder is None:
            if exploration.run is None:
                raise ValueError(
                    "the search panel needs the run's model to encode queries; open the exploration with "
                    "galaxalign.explore.load_exploration(run_dir) or pass encoder="
                )
            encoder = QueryEncoder(exploration.run)
        self.exploration = exploration
        self.encoder = encoder
        self._drawings: np.ndarray | None = None
        self._last_query: tuple[np.ndarray, str, np.ndarray | None] | None = None
        self.uses_symbols = exploration.run is None or exploration.run.config.uses_symbols
        names = exploration.class_names

        max_k = max(1, min(50, len(exploration)))
        self.k_slider = widgets.IntSlider(
            value=min(max(1, k), max_k), min=1, max=max_k, description="results", continuous_update=False
        )
        self.symbol_menu = widgets.Dropdown(options=names, value=names[0], description="symbol")
        self.symbol_button = widgets.Button(description="search by symbol", disabled=not self.uses_symbols)
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="upload image")
        # A run without symbols has no symbol tower to read a drawing.
        kinds = [GALAXY_IMAGE, SYMBOL_DRAWING] if self.uses_symbols else [GALAXY_IMAGE]
        self.upload_kind = widgets.ToggleButtons(options=kinds, value=GALAXY_IMAGE)
        self.upload_button = widgets.Button(description="search by upload")
        self.text = widgets.Text(
            placeholder="A picture of a barred spiral galaxy",
            description="text",
            continuous_update=False,
            layout=widgets.Layout(width="480px"),
        )
        self.text_button = widgets.Button(description="search by text")
        self.status = StatusLine("search panel")
        self.query_image = widgets.Image(format="png", layout=widgets.Layout(width="128px", height="128px"))
        self.query_caption = widgets.HTML()
        self.result_cards = CardRow(thumbnail_px, "galaxalign-result")

        query_panel = widgets.VBox(
            [widgets.HTML("<b>query</b>"), self.query_image, self.query_caption],
            layout=widgets.Layout(width="160px"),
        )
        results_panel = widgets.VBox([widgets.HTML("<b>nearest galaxies</b>"), self.result_cards])
        super().__init__(
            [
                widgets.HBox([self.symbol_menu, self.symbol_button, self.k_slider]),
                widgets.HBox([self.upload, self.upload_kind, self.upload_button]),
                widgets.HBox([self.text, self.text_button]),
                self.status,
                widgets.HBox([query_panel, results_panel]),
            ]
        )
        self.add_class("galaxalign-search")

        self.symbol_button.on_click(self.status.guard(lambda _: self.search_symbol(self.symbol_menu.value)))
        self.upload_button.on_click(self.status.guard(lambda _: self._search_upload()))
        self.text_button.on_click(self.status.guard(lambda _: self.search_text(self.text.value)))
        self.k_slider.observe(self.status.guard(self._on_k), names="value")
        self.text.observe(self.status.guard(lambda change: self.search_text(change["new"])), names="value")
        if initial == "symbol" and self.uses_symbols:
            self.search_symbol(names[0])
        elif initial is not None and exploration.prompts:
            self.text.value = exploration.prompts[0]

    def search_symbol(self, class_name: str) -> None:
        """Show the galaxies nearest to the symbol of ``class_name``, a mean over jittered drawings."""
        if not self.uses_symbols:
            message = "this run was trained without symbols; search by text or by an image"
            self.status.report(message, error=True)
            return
        vector = self.encoder.symbol(class_name)
        if self._drawings is None:
            self._drawings = symbol_drawings(self.exploration)
        drawing = self._drawings[self.encoder.run.schema.names.index(class_name)]
        self._show(vector, f"symbol of {class_name}", drawing)

    def search_text(self, description: str) -> None:
        """Show the galaxies nearest to a typed description; an empty text only clears the status line."""
        if not description or not description.strip():
            self.status.report("type a description of a galaxy, for example 'A picture of a merger'")
            return
        self._show(self.encoder.text(description), f"“{description}”", None)

    def search_file(self, path: str | Path, kind: str = GALAXY_IMAGE, name: str | None = None) -> None:
        """Show the galaxies nearest to an image file, read as a galaxy cutout or as a symbol drawing."""
        shown_name = name or Path(path).name
        if Path(path).is_file() and Path(path).stat().st_size == 0:
            self.status.report(f"cannot search by {shown_name}: the file is empty", error=True)
            return
        try:
            if kind == SYMBOL_DRAWING:
                vector = self.encoder.drawing(path)
            else:
                vector = self.encoder.image_file(path)
        except (UnreadableImageError, ValueError, FileNotFoundError) as error:
            # An upload sits in a temporary folder whose path means nothing to the user.
            reason = _reason(error).replace(str(path), shown_name).rstrip(". ")
            message = f"cannot search by {shown_name}: {reason}. Upload a JPEG, PNG or TIFF file"
            self.status.report(message, error=True)
            return
        config = self.encoder.run.config
        pixels = _preview(path, config.image_size)
        self._show(vector, f"{kind} {shown_name}", pixels)

    def _on_k(self, change: dict[str, Any]) -> None:
        if self._last_query is not None:
            self._show(*self._last_query)

    def _search_upload(self) -> None:
        if not self.upload.value:
            self.status.report("choose a file with the upload button first", error=True)
            return
        uploaded = self.upload.value[0]
        name = str(uploaded["name"])
        with tempfile.TemporaryDirectory() as folder:
            # A fixed name: the user's file name may be too long, empty or hold characters a file system
            # rejects. Its extension is kept where it is a plain one, because some readers look at it.
            suffix = Path(name).suffix.lower()
            safe_suffix = suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ""
            path = Path(folder) / f"upload{safe_suffix}"
            path.write_bytes(bytes(uploaded["content"]))
            self.search_file(path, self.upload_kind.value, name)

    def _show(self, vector: np.ndarray, caption: str, query_pixels: np.ndarray | None) -> None:
        self._last_query = (vector, caption, query_pixels)
        exploration = self.exploration
        result = exploration.search(vector, k=self.k_slider.value)
        rows = result.rows[0]
        names = exploration.class_names
        captions = [
            [f"{rank}. {exploration.ids[row]}", f"{score:.3f} · {names[exploration.labels[row]]}"]
            for rank, (row, score) in enumerate(zip(rows, result.scores[0], strict=True), 1)
        ]
        self.result_cards.show(exploration.thumbnails(rows), captions)
        self.query_image.value = png_bytes(query_pixels) if query_pixels is not None else b""
        self.query_image.layout.display = None if query_pixels is not None else "none"
        self.query_caption.value = html.escape(caption)
        self.result = result
        self.status.report(f"{len(rows)} nearest of {len(exploration)} galaxies by cosine similarity")


def _reason(error: Exception) -> str:
    """Return the decoder's complaint behind an image error, without the wrapping messages that name paths."""
    while error.__cause__ is not None and isinstance(error.__cause__, Exception):
        error = error.__cause__
    return str(getattr(error, "reason", None) or error)


def _preview(path: Path, size: int) -> np.ndarray | None:
    """Return the uploaded image at ``size`` pixels for display, or None when it cannot be shown."""
    try:
        return resize(decode_image_file(path), size)
    except (UnreadableImageError, ValueError):
        return None
