"""Image decoding to (H, W, 3) uint8 RGB, cropping, resizing and the image sources of the readers."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

# LANCZOS: Pillow widens the filter support by the reduction factor for every filter but
# NEAREST, so all of them antialias when shrinking. Lanczos keeps the most fine structure
# (spiral arms, dust lanes) for the least blur, and its higher cost is paid once because
# the cache stores the resized images.
RESAMPLING = Image.Resampling.LANCZOS

_UINT16_MAX = 65535


class UnreadableImageError(OSError):
    """An image file that cannot be decoded: missing, truncated or not an image.

    ``path`` is the file that failed and ``reason`` the decoder's complaint, when known.
    """

    def __init__(self, message: str, path: str | Path | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.reason = reason


def to_rgb_uint8(image: np.ndarray | Image.Image) -> np.ndarray:
    """Convert a decoded image to a C-contiguous (H, W, 3) uint8 RGB array.

    Accepted inputs: any PIL image, or an array of shape (H, W), (H, W, 1)
    (grey, replicated to three channels), (H, W, 2) (grey and alpha),
    (H, W, 3) (RGB) or (H, W, 4) (RGBA). An alpha channel is composited onto
    black. uint16 values are scaled by 255 / 65535 and rounded, floats must
    lie in [0, 1] and are scaled by 255 and rounded, bool becomes 0 or 255.
    PIL's 16-bit modes ("I;16", and "I" clipped to 0..65535) scale like uint16.
    Raises ``ValueError`` for other shapes and pixel types.
    """
    if isinstance(image, Image.Image):
        image = _pil_to_array(image)
    array = np.asarray(image)

    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        hint = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            hint = " (channels first? transpose to channels last with array.transpose(1, 2, 0))"
        raise ValueError(
            f"expected an image of shape (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4), "
            f"got shape {array.shape}{hint}"
        )

    channels = array.shape[2]
    has_alpha = channels in (2, 4)
    if array.dtype == np.uint8 and not has_alpha:
        rgb = array if channels == 3 else np.repeat(array, 3, axis=2)
        return np.ascontiguousarray(rgb)

    scaled = _to_unit_float(array)
    colour = scaled[:, :, : channels - 1] if has_alpha else scaled
    if has_alpha:
        colour = colour * scaled[:, :, channels - 1 :]
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    return np.ascontiguousarray(np.rint(colour * 255.0).astype(np.uint8))


def _pil_to_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(image)
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":
        # 32-bit integer images are mostly 16-bit data that Pillow widened, so values
        # above 65535 are clipped rather than rescaled.
        return np.clip(np.asarray(image), 0, _UINT16_MAX).astype(np.uint16)
    if mode == "F":
        return np.asarray(image)
    if mode == "P":
        return np.asarray(image.convert("RGBA" if "transparency" in image.info else "RGB"))
    if mode in ("PA", "La", "RGBa"):
        return np.asarray(image.convert("RGBA"))
    if mode == "1":
        return np.asarray(image.convert("L"))
    # Pillow converts CMYK, YCbCr, LAB, HSV and the rarer modes to RGB.
    return np.asarray(image.convert("RGB"))


def _to_unit_float(array: np.ndarray) -> np.ndarray:
    """Scale pixel values to float64 in [0, 1] according to their type."""
    if array.dtype == np.bool_:
        return array.astype(np.float64)
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float64) / _UINT16_MAX
    if np.issubdtype(array.dtype, np.floating):
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0.0 or high > 1.0:
            raise ValueError(
                f"float pixel values must lie in [0, 1], got the range [{low}, {high}]; "
                "divide by the maximum value or convert to uint8 first"
            )
        return array.astype(np.float64)
    raise ValueError(f"unsupported pixel type {array.dtype}; convert to uint8, uint16 or float in [0, 1]")


def center_crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """Return the central ``fraction`` of the width and height of an (H, W, ...) array.

    The kept size is ``round(fraction * H)`` by ``round(fraction * W)``, at least
    one pixel, and the result is a view into ``image``.
    """
    fraction = validate_fraction(fraction, "fraction")
    if fraction == 1.0:
        return image
    height, width = image.shape[:2]
    new_height = max(1, int(round(fraction * height)))
    new_width = max(1, int(round(fraction * width)))
    top = (height - new_height) // 2
    left = (width - new_width) // 2
    return image[top : top + new_height, left : left + new_width]


def validate_fraction(fraction: float, name: str) -> float:
    """Return ``fraction`` as a float; raise ValueError naming parameter ``name`` unless it is in (0, 1]."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {fraction!r}") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {fraction!r}")
    return value


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to (size, size, 3) with Lanczos resampling.

    Pillow's resize antialiases when shrinking. The aspect ratio is not kept, so
    crop to a square first (galaxy cutouts are square).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer number of pixels, got {size!r}")
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((int(size), int(size)), RESAMPLING)
    return np.asarray(resized)


def decode_image_file(path: str | Path) -> np.ndarray:
    """Decode an image file with Pillow into an (H, W, 3) uint8 RGB array.

    Raises ``UnreadableImageError`` naming the file when it is missing, truncated,
    not an image, or contains pixels that :func:`to_rgb_uint8` cannot convert.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb_uint8(image)
    except FileNotFoundError:
        reason = "file not found"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        # Pillow raises SyntaxError for some malformed files (a broken PNG chunk, for one).
        reason = str(error) or type(error).__name__
    raise UnreadableImageError(
        f"cannot read image {path}: {reason}. Fix or replace the file, or remove its row "
        "from the catalog, or pass skip_unreadable=True to leave unreadable images out.",
        path=path,
        reason=reason,
    )


class FileImages:
    """Image files on disk (JPEG, PNG, TIFF or any format Pillow decodes), one galaxy per file.

    ``load(i)`` decodes ``paths[i]`` to (H, W, 3) uint8 RGB at the file's own
    size in pixels, see :func:`to_rgb_uint8` for the conversions.
    """

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths: tuple[Path, ...] = tuple(Path(p) for p in paths)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> np.ndarray:
        return decode_image_file(self.paths[index])

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def fingerprint(self, indices: Sequence[int] | np.ndarray) -> list[Any]:
        """Return path, size in bytes and modification time of each file, for the image cache.

        A file that does not exist gets size and time -1, so creating it later
        changes the fingerprint.
        """
        entries: list[Any] = []
        for index in indices:
            path = self.paths[int(index)]
            try:
                stat = path.stat()
                entries.append([str(path), stat.st_size, stat.st_mtime_ns])
            except OSError:
                entries.append([str(path), -1, -1])
        return entries


class H5Images:
    """Images stored as one (N, H, W, C) dataset of an HDF5 file, read one at a time.

    The file opens on first use, not in ``__init__``, and pickling drops the
    open handle, so copies made for data loader worker processes open their
    own. A process created by fork reopens the file too. ``load(i)`` reads only
    image ``i`` and converts it with :func:`to_rgb_uint8`.
    """

    def __init__(self, path: str | Path, dataset_name: str) -> None:
        self.path = Path(path)
        self.dataset_name = dataset_name
        self._file: h5py.File | None = None
        self._dataset: h5py.Dataset | None = None
        self._pid: int | None = None

    def _images(self) -> h5py.Dataset:
        if self._dataset is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._dataset = self._file[self.dataset_name]
            self._pid = os.getpid()
        return self._dataset

    def __len__(self) -> int:
        return int(self._images().shape[0])

    def load(self, index: int) -> np.ndarray:
        images = self._images()
        count = images.shape[0]
        if not -count <= index < count:
            raise IndexError(
                f"image {index} is out of range for {self.path}:{self.dataset_name}, "
                f"which holds {count} images"
            )
        return to_rgb_uint8(images[index])

    def describe(self, index: int) -> str:
        return f"{self.path}:{self.dataset_name}[{index}]"

    def fingerprint(self, indices: Sequence[int] | np.ndarray) -> list[Any]:
        """Return the file's path, size in bytes, modification time and dataset name."""
        stat = self.path.stat()
        return [str(self.path), stat.st_size, stat.st_mtime_ns, self.dataset_name]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._dataset = None
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_dataset"] = None
        state["_pid"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class ConcatImages:
    """Several image sources read as one, in order: index ``i`` of the first, then the next."""

    def __init__(self, sources: Sequence[Any]) -> None:
        self.sources = tuple(sources)
        self._offsets = np.cumsum([0] + [len(source) for source in self.sources])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _locate(self, index: int) -> tuple[Any, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"image {index} is out of range for {len(self)} images")
        part = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return self.sources[part], index - int(self._offsets[part])

    def load(self, index: int) -> np.ndarray:
        source, local = self._locate(index)
        return source.load(local)

    def describe(self, index: int) -> str:
        source, local = self._locate(index)
        return source.describe(local)

    def fingerprint(self, indices: Sequence[int] | np.ndarray) -> list[Any]:
        """Return the fingerprints of the parts, for the image cache."""
        entries: list[Any] = []
        for source in self.sources:
            fingerprint = getattr(source, "fingerprint", None)
            entries.append(fingerprint(range(len(source))) if fingerprint else type(source).__name__)
        return entries
