"""Object ids of galaxies: conversion to int64 or str without passing through float, and lookup by id."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

_INTEGER_TEXT = re.compile(r"[+-]?\d+")


class IdLookup:
    """Rows of a 1-D array of unique int64 or str object ids, found by binary search in a sorted copy.

    The sorted copy is built on first use: one argsort of the ids.
    """

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self._order: np.ndarray | None = None
        self._sorted: np.ndarray | None = None

    def check_unique(self) -> None:
        """Raise ``ValueError`` naming the first duplicated id, its rows and the number of duplicates."""
        sorted_ids = self._sorted_table()[1]
        duplicated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
        if duplicated.size:
            value = sorted_ids[duplicated[0]]
            rows = np.flatnonzero(self.ids == value)
            raise ValueError(
                f"object id {value.item()!r} appears {rows.size} times in ids (rows {rows[:5].tolist()}), "
                f"and {duplicated.size} ids are duplicated in all. Each galaxy needs a unique id: drop the "
                "repeated rows or make the ids unique"
            )

    def rows(self, ids: Any) -> np.ndarray:
        """Return the int64 row of each id in ``ids`` (one id or a sequence).

        Integer ids also match decimal strings and the reverse. Raises
        ``KeyError`` listing the ids that are not found, and ``TypeError``
        for a float or another value that cannot be an object id.
        """
        values = _id_list(ids)
        rows = np.full(len(values), -1, dtype=np.int64)
        keys = [_convert_query_id(value, self.ids.dtype) for value in values]
        convertible = np.flatnonzero([key is not None for key in keys])
        if convertible.size:
            found = np.asarray([keys[i] for i in convertible], dtype=self.ids.dtype)
            rows[convertible] = self._find(found)

        missing = [values[i] for i in np.flatnonzero(rows < 0)]
        if missing:
            examples = ", ".join(repr(value) for value in self.ids[:3].tolist())
            raise KeyError(
                f"{len(missing)} of {len(values)} query ids are not in the index: {missing[:10]}. "
                f"The index contains {self.ids.size} ids, for example {examples}. Query with ids from the "
                "catalog the index was built from, or pass the galaxy's embedding to search()"
            )
        return rows

    def __contains__(self, value: object) -> bool:
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | str):
            return False
        key = _convert_query_id(value, self.ids.dtype)
        if key is None:
            return False
        return bool(self._find(np.asarray([key], dtype=self.ids.dtype))[0] >= 0)

    def _sorted_table(self) -> tuple[np.ndarray, np.ndarray]:
        if self._order is None or self._sorted is None:
            self._order = np.argsort(self.ids, kind="stable")
            self._sorted = self.ids[self._order]
        return self._order, self._sorted

    def _find(self, keys: np.ndarray) -> np.ndarray:
        """Return the row of each key, or -1 where the key is not an id."""
        order, sorted_ids = self._sorted_table()
        positions = np.searchsorted(sorted_ids, keys)
        clipped = np.minimum(positions, sorted_ids.size - 1)
        found = sorted_ids[clipped] == keys
        return np.where(found, order[clipped], -1).astype(np.int64)


def as_id_array(ids: Sequence[Any] | np.ndarray, name: str = "ids") -> np.ndarray:
    """Convert object ids to a 1-D int64 or str array without passing through float.

    Accepts integer arrays (uint64 values must fit in int64), string arrays,
    and sequences of Python ints or strings (not both). Raises ``TypeError``
    for floats, booleans, bytes or mixed types, naming ``name``.
    """
    if isinstance(ids, pd.Series | pd.Index):
        ids = ids.to_numpy()
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
        if ids.dtype.kind == "u" and ids.size and ids.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} contains integers above the int64 maximum; store such ids as strings")
        return _one_dimensional(ids.astype(np.int64), name)
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "U":
        return _one_dimensional(ids, name)
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "f":
        raise TypeError(
            f"{name} has dtype {ids.dtype}, but object ids must be integers or strings: a float64 keeps "
            "only 15-16 significant digits, so 18-digit SDSS objids would change. Read the id column as "
            "int64 or str (for example pandas.read_csv(..., dtype={'objid': 'int64'}))"
        )
    if isinstance(ids, np.ndarray) and ids.dtype.kind != "O":
        raise TypeError(f"{name} has dtype {ids.dtype}; object ids must be integers or strings")

    values = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    if all(isinstance(value, str) for value in values):
        return _one_dimensional(np.asarray(values, dtype=str), name)
    if all(
        isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_) for value in values
    ):
        try:
            return _one_dimensional(np.asarray(values, dtype=np.int64), name)
        except OverflowError:
            raise ValueError(
                f"{name} contains integers outside the int64 range; store such ids as strings"
            ) from None
    kinds = sorted({type(value).__name__ for value in values})
    accepted = [isinstance(value, int | str) and not isinstance(value, bool) for value in values]
    example = values[accepted.index(False)] if not all(accepted) else values[0]
    raise TypeError(
        f"{name} must be all integers or all strings, got types {kinds} (for example {example!r}). "
        "Floats are rejected because they lose digits of long object ids"
    )


def _one_dimensional(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one object id per galaxy, got shape {array.shape}")
    return array


def _id_list(ids: Any) -> list[Any]:
    """Return one query id or a sequence of them as a non-empty list of Python values."""
    if isinstance(ids, str | bytes) or np.ndim(ids) == 0:
        values = [ids]
    elif isinstance(ids, np.ndarray | pd.Series | pd.Index):
        values = list(np.asarray(ids).tolist())
    else:
        values = list(ids)
    if not values:
        raise ValueError("no query ids given. Pass one object id or a non-empty sequence of them")
    return [value.item() if isinstance(value, np.generic) else value for value in values]


def _convert_query_id(value: Any, id_dtype: np.dtype) -> int | str | None:
    """Convert one query id to the kind of the index's ids, or return None when it cannot be one of them.

    Integer ids accept decimal strings, and string ids accept integers.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(
            f"query id {value!r} has type {type(value).__name__}; object ids are integers or strings. "
            "Floats are rejected because they lose digits of long object ids"
        )
    if id_dtype.kind == "U":
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if not _INTEGER_TEXT.fullmatch(text):
            return None
        value = int(text)
    if not np.iinfo(np.int64).min <= value <= np.iinfo(np.int64).max:
        return None
    return value
