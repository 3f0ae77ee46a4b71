"""Batches of cached pixels, read in a background thread while the model trains on the previous batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch


def read_batch(pixels: np.ndarray, rows: np.ndarray, pin_memory: bool = False) -> torch.Tensor:
    """Copy the uint8 (B, S, S, 3) images at cache ``rows`` into a tensor (in page-locked memory if asked).

    ``pixels`` may be a memory map: only the rows read come from the disk.
    """
    images = torch.from_numpy(np.ascontiguousarray(pixels[rows]))
    return images.pin_memory() if pin_memory else images


class BatchPrefetcher:
    """Iterate over ``(positions, images)`` of ``batches``, reading each batch's images one step ahead.

    ``batches`` contains arrays of dataset positions and ``rows_of`` maps them to
    cache rows of ``pixels``. While the caller trains on one batch, a thread
    reads the next from the cache. The copy and the page faults of a memory map
    run in that thread, and PyTorch's operators release the GIL, so the two
    overlap. ``pin_memory`` page-locks the batch so a CUDA copy can be
    asynchronous.
    """

    def __init__(
        self,
        pixels: np.ndarray,
        rows_of: np.ndarray,
        batches: Sequence[np.ndarray],
        pin_memory: bool = False,
    ) -> None:
        self.pixels = pixels
        self.rows_of = rows_of
        self.batches = batches
        self.pin_memory = pin_memory

    def __len__(self) -> int:
        return len(self.batches)

    def _read(self, index: int) -> torch.Tensor:
        return read_batch(self.pixels, self.rows_of[self.batches[index]], self.pin_memory)

    def __iter__(self) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        if not self.batches:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="galaxalign-batches") as pool:
            pending: Future[torch.Tensor] = pool.submit(self._read, 0)
            try:
                for index in range(len(self.batches)):
                    images = pending.result()
                    if index + 1 < len(self.batches):
                        pending = pool.submit(self._read, index + 1)
                    yield self.batches[index], images
            finally:
                pending.cancel()
