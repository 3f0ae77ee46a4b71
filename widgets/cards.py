"""Thumbnail cards shared by the widgets: PNG encoding of cached galaxy images and captioned tiles."""

from __future__ import annotations

import html
import io
import logging
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode an (S, S, 3) uint8 image as PNG bytes, favouring speed over size."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def message_html(text: str, error: bool = False) -> str:
    """Format a status message for an HTML widget, red for errors."""
    colour = "#b00020" if error else "#555555"
    return f'<span style="color: {colour}">{html.escape(text)}</span>'


class Card(widgets.VBox):
    """A galaxy thumbnail with a caption under it, reused between searches to avoid new widgets per click."""

    def __init__(self, size_px: int, css_class: str) -> None:
        self.image = widgets.Image(
            format="png", layout=widgets.Layout(width=f"{size_px}px", height=f"{size_px}px")
        )
        self.caption = widgets.HTML(layout=widgets.Layout(width=f"{size_px + 24}px"))
        super().__init__([self.image, self.caption], layout=widgets.Layout(margin="2px"))
        self.add_class(css_class)

    def show(self, pixels: np.ndarray, caption_lines: list[str]) -> None:
        self.image.value = png_bytes(pixels)
        self.caption.value = (
            '<div style="font-size: 11px; line-height: 1.2; word-break: break-all">'
            + "<br>".join(html.escape(line) for line in caption_lines)
            + "</div>"
        )


class CardRow(widgets.HBox):
    """A wrapping row of :class:`Card` tiles whose count follows the results shown."""

    def __init__(self, size_px: int, css_class: str) -> None:
        super().__init__(layout=widgets.Layout(flex_flow="row wrap"))
        self._size_px = size_px
        self._css_class = css_class
        self._pool: list[Card] = []

    def show(self, images: np.ndarray, captions: list[list[str]]) -> None:
        """Show one card per image, in order, creating cards only when more are needed than before."""
        while len(self._pool) < len(images):
            self._pool.append(Card(self._size_px, self._css_class))
        for card, pixels, lines in zip(self._pool, images, captions, strict=False):
            card.show(pixels, lines)
        needed = tuple(self._pool[: len(images)])
        if self.children != needed:
            self.children = needed


class StatusLine(widgets.HTML):
    """A widget's status line: messages in grey, errors in red, and errors of guarded callbacks."""

    def __init__(self, owner: str) -> None:
        super().__init__()
        self.add_class("galaxalign-status")
        self._owner = owner

    def report(self, text: str, error: bool = False) -> None:
        """Show ``text``; an error is also logged as a warning."""
        if error:
            logger.warning("%s: %s", self._owner, text)
        self.value = message_html(text, error)

    def guard(self, callback: Callable[..., None]) -> Callable[..., None]:
        """Wrap a widget callback so that an unexpected error shows here, not only in the log."""

        def run(*args: Any) -> None:
            # Catches any error: a callback that raises leaves the widget half-updated and the message unseen.
            try:
                callback(*args)
            except Exception as error:
                logger.exception("the %s failed", self._owner)
                self.report(f"{type(error).__name__}: {error}", True)

        return run
