"""The in-memory description of a labelled galaxy image collection."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from galaxalign.schema import ClassSchema

logger = logging.getLogger(__name__)


@runtime_checkable
class ImageSource(Protocol):
    """Random access to the images of a dataset.

    ``load(i)`` returns image ``i`` as an (H, W, 3) uint8 RGB array; sizes may
    differ between images. ``describe(i)`` names where image ``i`` comes from
    (a file path, or a file and index) for error messages.
    """

    def __len__(self) -> int: ...

    def load(self, index: int) -> np.ndarray: ...

    def describe(self, index: int) -> str: ...


@dataclass
class GalaxyDataset:
    """Labelled galaxy cutouts.

    ``images`` gives uint8 RGB pixels in the survey's own cutout size;
    ``labels`` are int64 class indices into ``schema``; ``ids`` are object ids
    as strings (an SDSS objid, or ``"<file>:<row>"`` where the source has
    none). ``source`` names the file or folder the data was read from.
    ``rows`` maps each galaxy to its index in ``images`` (so subsets share
    one image source). ``canonical_split`` holds "train" or "test" per galaxy
    where the data set defines its own split (GalaxyMNIST), else ``None``.
    ``extra`` holds further per-galaxy values by name, one array entry per
    galaxy (Galaxy10's ``ra`` and ``dec`` in degrees, for example), else ``None``.
    """

    images: ImageSource
    labels: np.ndarray
    ids: np.ndarray
    schema: ClassSchema
    source: str
    rows: np.ndarray | None = None
    canonical_split: np.ndarray | None = None
    extra: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.ids = np.asarray(self.ids, dtype=str)
        n = len(self.labels)
        if len(self.ids) != n:
            raise ValueError(f"{self.source}: {n} labels but {len(self.ids)} ids")
        if self.rows is None:
            self.rows = np.arange(n)
        self.rows = np.asarray(self.rows, dtype=np.int64)
        if len(self.rows) != n:
            raise ValueError(f"{self.source}: {n} labels but {len(self.rows)} image rows")
        if self.canonical_split is not None:
            self.canonical_split = np.asarray(self.canonical_split, dtype=str)
            if len(self.canonical_split) != n:
                raise ValueError(f"{self.source}: {n} labels but {len(self.canonical_split)} split tags")
        if self.extra is not None:
            self.extra = {name: np.asarray(values) for name, values in self.extra.items()}
            for name, values in self.extra.items():
                if len(values) != n:
                    raise ValueError(f"{self.source}: {n} labels but {len(values)} values of {name!r}")
        bad = np.flatnonzero((self.labels < 0) | (self.labels >= len(self.schema)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{self.source}: label {int(self.labels[i])} of object {self.ids[i]} is outside "
                f"0..{len(self.schema) - 1} for schema {self.schema.name!r}"
            )
        unique_ids, counts = np.unique(self.ids, return_counts=True)
        if (counts > 1).any():
            repeated = unique_ids[counts > 1][:5].tolist()
            raise ValueError(f"{self.source}: object ids must be unique, but {repeated} occur more than once")

    def __len__(self) -> int:
        return len(self.labels)

    def load_image(self, index: int) -> np.ndarray:
        return self.images.load(int(self.rows[index]))  # type: ignore[index]

    def describe(self, index: int) -> str:
        return self.images.describe(int(self.rows[index]))  # type: ignore[index]

    def subset(self, indices: Sequence[int] | np.ndarray) -> GalaxyDataset:
        """Return the galaxies at ``indices`` (positions in this dataset), sharing the images."""
        indices = np.asarray(indices, dtype=np.int64)
        return GalaxyDataset(
            images=self.images,
            labels=self.labels[indices],
            ids=self.ids[indices],
            schema=self.schema,
            source=self.source,
            rows=self.rows[indices],  # type: ignore[index]
            canonical_split=(self.canonical_split[indices] if self.canonical_split is not None else None),
            extra=(
                {name: values[indices] for name, values in self.extra.items()}
                if self.extra is not None
                else None
            ),
        )

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.schema))
        return {name: int(c) for name, c in zip(self.schema.names, counts, strict=True)}

    def positions_of(self, ids: Sequence[str]) -> np.ndarray:
        """Return the positions of the given object ids; raise ``KeyError`` naming any unknown id."""
        lookup = {objid: i for i, objid in enumerate(self.ids)}
        missing = [i for i in ids if i not in lookup]
        if missing:
            raise KeyError(f"{len(missing)} object ids are not in {self.source}, e.g. {missing[:3]}")
        return np.array([lookup[i] for i in ids], dtype=np.int64)
