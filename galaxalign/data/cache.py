"""The decoded-image cache: each image is decoded, cropped and resized once and kept in a .npy file."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from galaxalign.data.dataset import GalaxyDataset
from galaxalign.data.images import RESAMPLING, UnreadableImageError, center_crop, resize, validate_fraction

logger = logging.getLogger(__name__)

# Bump when the stored pixels would change for the same inputs (decoding, crop or resize rules).
CACHE_FORMAT_VERSION = 1

_CHUNK_IMAGES = 256
# Datasets smaller than this decode in the calling thread (an estimate: for a few images
# the pool's start-up is not worth it).
_THREADED_MIN_IMAGES = 32
_MAX_THREADS = 8
_MAX_NAMES_LOGGED = 20


@dataclass
class CachedImages:
    """The decoded images of a dataset at one size, memory-mapped from the cache.

    ``array`` is (N, size, size, 3) uint8 RGB in the dataset's order, N being
    the dataset's length. Rows of images that could not be decoded are zero
    (black), and ``kept`` lists the positions of the images that decoded, as
    int64. ``path`` is the cache's .npy file.
    """

    array: np.ndarray
    kept: np.ndarray
    path: Path

    def __len__(self) -> int:
        return len(self.array)


def default_cache_dir() -> Path:
    """Return the cache folder: $GALAXALIGN_CACHE, else ~/.cache/galaxalign."""
    configured = os.environ.get("GALAXALIGN_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "galaxalign"


def cache_images(
    dataset: GalaxyDataset,
    size: int,
    crop_fraction: float = 1.0,
    cache_dir: str | Path | None = None,
    skip_unreadable: bool = False,
) -> CachedImages:
    """Decode, crop and resize every image of ``dataset`` once, and return the cached result.

    Each image keeps its central ``crop_fraction`` of width and height and is
    resized to ``size`` x ``size`` pixels. The result goes to
    ``<cache_dir>/images-<size>px-<key>.npy``, where the key hashes the
    dataset's source, ids and rows, ``size``, ``crop_fraction`` and the image
    files' sizes and modification times. A later call with the same inputs
    opens that file and decodes nothing.

    An unreadable image raises ``UnreadableImageError`` naming it, unless
    ``skip_unreadable=True``: then it is logged and left out of ``kept``.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer number of pixels, got {size!r}")
    crop_fraction = validate_fraction(crop_fraction, "crop_fraction")
    if len(dataset) == 0:
        raise ValueError(f"{dataset.source}: the dataset has no galaxies, so there is nothing to cache")

    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"images-{int(size)}px-{cache_key(dataset, int(size), crop_fraction)}"
    array_path = folder / f"{stem}.npy"
    kept_path = folder / f"{stem}.kept.npy"

    cached = _open_cache(array_path, kept_path, len(dataset), int(size))
    if cached is None:
        _build_cache(dataset, int(size), crop_fraction, array_path, kept_path, skip_unreadable)
        cached = _open_cache(array_path, kept_path, len(dataset), int(size))
        assert cached is not None, f"the cache just written to {array_path} does not open"
    else:
        logger.info("using the cached images in %s", array_path)
    array, kept_mask = cached

    failed = np.flatnonzero(~kept_mask)
    if failed.size and not skip_unreadable:
        names = [dataset.describe(int(i)) for i in failed[:_MAX_NAMES_LOGGED]]
        raise UnreadableImageError(
            f"{failed.size} images of {dataset.source} could not be read, e.g. {names}. Fix or "
            "replace those files, remove their rows, or pass skip_unreadable=True to leave them out.",
            path=names[0],
        )
    return CachedImages(array=array, kept=np.flatnonzero(kept_mask), path=array_path)


def cache_key(dataset: GalaxyDataset, size: int, crop_fraction: float) -> str:
    """Return the hash that names a dataset's cache file (24 hex digits).

    Image sources with a ``fingerprint(indices)`` method (files, HDF5 files)
    add file sizes and modification times, so an edited image file gives a new
    key. For other sources only the ``describe()`` names enter the key.
    """
    rows = np.asarray(dataset.rows)
    fingerprint: Callable[[Any], Any] | None = getattr(dataset.images, "fingerprint", None)
    if fingerprint is not None:
        images: Any = fingerprint(rows)
    else:
        # NOTE: a source without fingerprint() cannot tell the cache that its pixels
        # changed; delete the cache file after editing such a source's images.
        images = [type(dataset.images).__qualname__] + [dataset.describe(i) for i in range(len(dataset))]
    payload = {
        "version": CACHE_FORMAT_VERSION,
        "source": dataset.source,
        "ids": dataset.ids.tolist(),
        "rows": rows.tolist(),
        "size": size,
        "crop_fraction": repr(float(crop_fraction)),
        "resampling": RESAMPLING.name,
        "images": images,
    }
    text = json.dumps(payload, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _open_cache(
    array_path: Path, kept_path: Path, count: int, size: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Return the cached array and kept mask, or None when absent or not as expected."""
    if not (array_path.exists() and kept_path.exists()):
        return None
    try:
        array = np.load(array_path, mmap_mode="r")
        kept_mask = np.load(kept_path)
    except (OSError, ValueError) as error:
        logger.warning("cannot read the cache %s (%s); decoding the images again", array_path, error)
        return None
    if array.shape != (count, size, size, 3) or array.dtype != np.uint8 or kept_mask.shape != (count,):
        logger.warning(
            "the cache %s has shape %s, expected %s; decoding the images again",
            array_path,
            array.shape,
            (count, size, size, 3),
        )
        return None
    return array, kept_mask.astype(bool)


def _build_cache(
    dataset: GalaxyDataset,
    size: int,
    crop_fraction: float,
    array_path: Path,
    kept_path: Path,
    skip_unreadable: bool,
) -> None:
    """Decode all images into a temporary .npy file, then rename it into place."""
    count = len(dataset)
    token = f"tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    array_tmp = array_path.with_name(f"{array_path.name}.{token}")
    kept_tmp = kept_path.with_name(f"{kept_path.name}.{token}")
    unreadable: list[str] = []

    def prepare(position: int) -> np.ndarray | None:
        try:
            image = dataset.load_image(position)
        except OSError as error:
            if not isinstance(error, UnreadableImageError):
                error = UnreadableImageError(
                    f"cannot read image {dataset.describe(position)}: {error}. Fix or replace it, "
                    "or pass skip_unreadable=True to leave unreadable images out.",
                    path=dataset.describe(position),
                )
            if not skip_unreadable:
                raise error
            unreadable.append(dataset.describe(position))
            return None
        return resize(center_crop(image, crop_fraction), size)

    logger.info(
        "decoding %d images of %s to %d px (crop fraction %s) into %s",
        count,
        dataset.source,
        size,
        crop_fraction,
        array_path,
    )
    out = np.lib.format.open_memmap(array_tmp, mode="w+", dtype=np.uint8, shape=(count, size, size, 3))
    kept_mask = np.ones(count, dtype=bool)
    try:
        with (
            _map_function(count) as map_images,
            tqdm(total=count, unit="image", desc="decoding images") as progress,
        ):
            for start in range(0, count, _CHUNK_IMAGES):
                positions = range(start, min(start + _CHUNK_IMAGES, count))
                for position, image in zip(positions, map_images(prepare, positions), strict=True):
                    if image is None:
                        kept_mask[position] = False
                    else:
                        out[position] = image
                progress.update(len(positions))
        out.flush()
        del out
        with open(kept_tmp, "wb") as handle:
            np.save(handle, kept_mask)
        # The kept mask goes into place first: an array file without its mask is never left behind.
        os.replace(kept_tmp, kept_path)
        os.replace(array_tmp, array_path)
    finally:
        array_tmp.unlink(missing_ok=True)
        kept_tmp.unlink(missing_ok=True)

    if unreadable:
        listed_names = ", ".join(sorted(unreadable)[:_MAX_NAMES_LOGGED])
        more = (
            f" and {len(unreadable) - _MAX_NAMES_LOGGED} more" if len(unreadable) > _MAX_NAMES_LOGGED else ""
        )
        logger.warning(
            "left out %d of %d images of %s that could not be read: %s%s",
            len(unreadable),
            count,
            dataset.source,
            listed_names,
            more,
        )


@contextmanager
def _map_function(count: int) -> Iterator[Callable[..., Iterator[Any]]]:
    """Yield ``map``, or a thread pool's ``map`` for many images on a machine with several CPUs.

    Threads help because Pillow's C decoders and resampling release the GIL
    (they run between ImagingSectionEnter and ImagingSectionLeave).
    """
    threads = min(_MAX_THREADS, os.cpu_count() or 1)
    if count < _THREADED_MIN_IMAGES or threads < 2:
        yield map
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="galaxalign-decode") as pool:
        yield pool.map
