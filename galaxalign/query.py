"""Query vectors for similarity search: an image file, a class symbol, a user's drawing, or a text."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import open_clip
import torch

from galaxalign.data.augment import normalize, to_float_nchw
from galaxalign.data.images import UnreadableImageError, center_crop, decode_image_file, resize
from galaxalign.embed import autocast_context
from galaxalign.models import resolve_model_name
from galaxalign.runs import FinishedRun
from galaxalign.symbols import SymbolBank, load_symbol_image

logger = logging.getLogger(__name__)


class QueryEncoder:
    """Turn user queries into unit-length vectors in a finished run's embedding space.

    Image files go through the image tower after the crop and resize of the
    run's cache (``crop_fraction``, ``image_size`` pixels). Class symbols and
    drawings go through the symbol tower, and texts through the text tower.
    Every method returns a float32 (D,) vector for
    :meth:`galaxalign.search.NeighbourIndex.search`.
    """

    def __init__(self, run: FinishedRun, symbol_draws: int = 8) -> None:
        if isinstance(symbol_draws, bool) or not isinstance(symbol_draws, int) or symbol_draws < 1:
            raise ValueError(f"symbol_draws must be a positive integer, got {symbol_draws!r}")
        self.run = run
        self.symbol_draws = symbol_draws
        model_name, _ = resolve_model_name(run.config.model)
        context_length = run.model.clip.context_length  # type: ignore[attr-defined]
        self._tokenizer = open_clip.get_tokenizer(model_name, context_length=context_length)

    def image_file(self, path: str | Path) -> np.ndarray:
        """Embed a galaxy cutout from an image file (JPEG, PNG, TIFF), cropped and resized like the cache."""
        config = self.run.config
        try:
            image = decode_image_file(path)
        except UnreadableImageError as error:
            raise UnreadableImageError(
                f"cannot use {path} as a query: {error.reason}. Pass a JPEG, PNG or TIFF galaxy cutout",
                path=path,
            ) from error
        pixels = resize(center_crop(image, config.crop_fraction), config.image_size)
        return self._encode_pixels(self.run.model.encode_image, pixels[None])[0]

    def drawing(self, path: str | Path) -> np.ndarray:
        """Embed a user's own symbol drawing (light shape on a dark or transparent background)."""
        pixels = load_symbol_image(path, self.run.config.image_size)
        return self._encode_pixels(self.run.model.encode_symbol, pixels[None])[0]

    def symbol(self, class_name: str, seed: int = 0) -> np.ndarray:
        """Embed a class symbol: the re-normalised mean over ``symbol_draws`` jittered drawings."""
        schema = self.run.schema
        if class_name not in schema.names:
            raise ValueError(f"unknown class {class_name!r}; the run's classes are {list(schema.names)}")
        label = schema.names.index(class_name)
        bank = SymbolBank(schema, self.run.config.image_size, self.symbol_draws, seed)
        vectors = self._encode_pixels(self.run.model.encode_symbol, bank.images[label])
        mean = vectors.mean(axis=0)
        return (mean / np.linalg.norm(mean)).astype(np.float32)

    def text(self, description: str) -> np.ndarray:
        """Embed a free-text description such as "A picture of a barred spiral galaxy"."""
        if not isinstance(description, str) or not description.strip():
            raise ValueError(f"the text query must be a non-empty string, got {description!r}")
        self._warn_if_truncated(description)
        tokens = self._tokenizer([description]).to(self.run.device)
        with torch.no_grad(), autocast_context(self.run.device):
            return self.run.model.encode_text(tokens).float().cpu().numpy()[0]

    def _warn_if_truncated(self, description: str) -> None:
        encode = getattr(self._tokenizer, "encode", None)
        context_length = self.run.model.clip.context_length  # type: ignore[attr-defined]
        # Two of the context's tokens mark the start and end of the text.
        if encode is not None and len(encode(description)) > context_length - 2:
            logger.warning(
                "the text query has more than the %d tokens the run's text tower reads; the rest is cut off",
                context_length - 2,
            )

    def _encode_pixels(
        self, encode: Callable[[torch.Tensor], torch.Tensor], pixels: np.ndarray
    ) -> np.ndarray:
        batch = torch.from_numpy(np.array(pixels, dtype=np.uint8)).to(self.run.device)
        with torch.no_grad(), autocast_context(self.run.device):
            features = encode(normalize(to_float_nchw(batch), self.run.normalization))
        return features.float().cpu().numpy()
