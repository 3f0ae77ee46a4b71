"""Evaluation metrics: classification scores and similarity-search mAP over embeddings."""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

# Number of rows that normalize_rows converts to float64 at once, so its
# temporary copies stay small for any number of embeddings.
_NORMALIZE_BLOCK_ROWS = 65536


def normalize_rows(x: np.ndarray, name: str = "embeddings", dtype: Any = np.float32) -> np.ndarray:
    """Scale each row of a 2-D array to unit Euclidean length.

    The arithmetic runs in float64, and each row is divided by its largest
    absolute value first, so squared lengths cannot overflow and rows of tiny
    values do not underflow to zero. Raises ``ValueError`` naming the first row that contains NaN
    or inf, or whose values are all zero (a direction that has no cosine
    similarity). ``name`` is the argument name used in those messages.
    """
    array = np.asarray(x)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_items, dim) with dim >= 1, got shape {array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must contain real numbers, got dtype {array.dtype}")

    out = np.empty(array.shape, dtype=dtype)
    for start in range(0, array.shape[0], _NORMALIZE_BLOCK_ROWS):
        block = np.asarray(array[start : start + _NORMALIZE_BLOCK_ROWS], dtype=np.float64)

        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise ValueError(
                f"{name} row {row} contains NaN or inf. Remove that item or re-run the embedding step"
            )

        max_abs = np.abs(block).max(axis=1)
        if (max_abs == 0).any():
            row = start + int(np.argmin(max_abs != 0))
            raise ValueError(
                f"{name} row {row} is all zeros, so its cosine similarity is undefined. "
                "Remove that item or re-run the embedding step"
            )

        block = block / max_abs[:, None]
        lengths = np.sqrt(np.einsum("ij,ij->i", block, block))
        out[start : start + block.shape[0]] = block / lengths[:, None]
    return out


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _check_class_labels(y: Any, name: str, n_classes: int) -> np.ndarray:
    array = np.asarray(y)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must contain integer class indices, got dtype {array.dtype}")
    outside = (array < 0) | (array >= n_classes)
    if outside.any():
        position = int(np.argmax(outside))
        raise ValueError(
            f"{name}[{position}] = {array[position]} is not a class index in [0, {n_classes}). "
            "Pass class_names for every class the labels use"
        )
    return array.astype(np.int64)


def classification_metrics(y_true: Any, y_pred: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Compute accuracy, macro F1, per-class scores and the confusion matrix.

    ``y_true`` and ``y_pred`` are integer class indices into ``class_names``.
    Returns a JSON-serialisable dict with ``accuracy``, ``macro_f1``,
    ``per_class`` (``{name: {"precision", "recall", "f1", "support"}}``) and
    ``confusion`` (a list of lists, rows are true classes and columns are
    predicted classes, both in ``class_names`` order).

    Every class in ``class_names`` counts in the macro average, including a
    class absent from both ``y_true`` and ``y_pred``. A precision, recall or
    F1 whose denominator is zero is scored 0 (scikit-learn's
    ``zero_division=0``), so a class that is never predicted, or missing from
    the evaluation set, pulls macro F1 down rather than being left out.
    """
    names = list(class_names)
    if not names:
        raise ValueError("class_names is empty. Pass the name of every class, in label order")
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"class_names must be unique, but these repeat: {duplicates}")

    true = _check_class_labels(y_true, "y_true", len(names))
    pred = _check_class_labels(y_pred, "y_pred", len(names))
    if true.shape != pred.shape:
        raise ValueError(
            f"y_true has {true.size} labels but y_pred has {pred.size}, and they must match one to one"
        )
    if true.size == 0:
        raise ValueError("y_true and y_pred are empty, but classification metrics need at least one galaxy")

    labels = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=labels, average=None, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }
    return {
        "accuracy": float(accuracy_score(true, pred)),
        "macro_f1": float(f1_score(true, pred, labels=labels, average="macro", zero_division=0)),
        "per_class": per_class,
        "confusion": confusion_matrix(true, pred, labels=labels).tolist(),
    }


def average_precision_at_k(relevance: np.ndarray, k: int, n_relevant: int) -> float:
    """Compute AP@k of one ranked list.

    ``relevance`` contains 1 (or True) for a relevant item and 0 for any other,
    best-ranked first. AP@k = (1 / min(k, n_relevant)) * sum over ranks
    i <= k of P@i * rel_i, where P@i is the fraction of relevant items among
    the first i and ``n_relevant`` is the number of relevant items in the whole
    collection, not only in the list.
    """
    k = _check_positive_int(k, "k")
    n_relevant = _check_positive_int(n_relevant, "n_relevant")
    rel = np.asarray(relevance)
    if rel.ndim != 1:
        raise ValueError(f"relevance must be a 1-D array in rank order, got shape {rel.shape}")
    if not np.isin(rel, (0, 1)).all():
        raise ValueError("relevance must contain only 0 and 1 (or False and True)")

    top = rel[:k].astype(np.float64)
    hits = np.cumsum(top)
    if hits.size and hits[-1] > n_relevant:
        raise ValueError(
            f"relevance has {int(hits[-1])} relevant items in its first {k} ranks, "
            f"more than n_relevant = {n_relevant}"
        )
    precision_at_rank = hits / np.arange(1, top.size + 1)
    return float((precision_at_rank * top).sum() / min(k, n_relevant))


# Chunk of queries that retrieval_metrics scores at once when it picks the size
# itself. It takes 1024 queries, or fewer where their float32 scores would
# exceed 128 MiB (335 queries for 100,000 galaxies). With 20,000 x 512 embeddings on a
# 2-core AMD EPYC and OpenBLAS 0.3.31, products of 128 query rows at a time took
# 25% more CPU time than 512 or more.
_CHUNK_ROWS = 1024
_CHUNK_BYTES = 128 * 2**20

# Number of scores that one thread turns into sort keys, sorts and reads back in
# one go (2 MiB of int32 keys). Blocks this small stay in the CPU cache between
# those passes.
_SUBBLOCK_SCORES = 2**19

# Sort key of a query's own column. The key of every score between -2 and 2 is
# larger, so the query sorts below every other item.
_SELF_KEY = np.iinfo(np.int32).min


def retrieval_metrics(
    embeddings: np.ndarray,
    labels: np.ndarray,
    k: int = 5,
    chunk_size: int | None = None,
    n_threads: int | None = None,
    per_query: bool = False,
) -> dict[str, Any]:
    """Score similarity search: each galaxy queries all the others by cosine similarity.

    ``embeddings`` is (N, D) with one row per galaxy and ``labels`` is (N,)
    with the class of each row (any values that compare equal within a
    class). The query itself is excluded from its ranking, and an item is
    relevant when its label equals the query's. Cosine similarities are
    float32 products of unit-length rows, so two items are tied when their
    float32 scores are equal.

    NOTE: float32 rounding can swap items whose cosines differ by less than
    about 1e-7. On 3,000 random 64-d embeddings, ``map`` differed from the
    float64 result by 1e-8.

    Returns a dict with

    - ``map``: the mean over queries of AP over the whole ranking. Per query it
      equals ``sklearn.metrics.average_precision_score(relevant, scores)``,
      which puts tied scores into one threshold:
      AP = (1/R) * sum over relevant items j of
      (#relevant scoring >= s_j) / (#items scoring >= s_j), R = #relevant.
    - ``map_at_{k}`` (for example ``map_at_5``): the mean of AP@k as in
      :func:`average_precision_at_k`, with the normaliser min(k, R). The
      ranking orders by descending score and breaks ties by the lower row
      index, which decides which tied items fill the last places of the top k.
    - ``n_queries``: the number of galaxies that were scored as queries.
    - ``n_skipped``: galaxies left out as queries because no other galaxy
      has their label (a class with one member). They still appear in the
      rankings of other queries.
    - ``ap`` and ``ap_at_{k}``, only with ``per_query=True``: float64 arrays
      of shape (N,) with each galaxy's AP and AP@k in input row order, NaN
      for a skipped galaxy.

    Queries run ``chunk_size`` at a time (by default 1024, or fewer where
    their float32 scores would exceed 128 MiB), and ``n_threads`` threads (by
    default one per CPU core this process may use) sort the rows of each
    chunk. Memory grows with the temporary float64 blocks of
    :func:`normalize_rows`, two float32 copies of the embeddings while they
    are reordered by class (one after that), one chunk of ``chunk_size * N``
    float32 scores and two 2 MiB buffers per thread, never with N * N.
    """
    k = _check_positive_int(k, "k")
    if chunk_size is not None:
        chunk_size = _check_positive_int(chunk_size, "chunk_size")
    n_threads = _available_cores() if n_threads is None else _check_positive_int(n_threads, "n_threads")
    unit = normalize_rows(embeddings, "embeddings", dtype=np.float32)
    n_items = unit.shape[0]
    label_array = np.asarray(labels)
    if label_array.ndim != 1 or label_array.shape[0] != n_items:
        raise ValueError(
            f"labels must be a 1-D array with one label per embedding row ({n_items}), "
            f"got shape {label_array.shape}"
        )

    classes, codes, class_sizes = np.unique(label_array, return_inverse=True, return_counts=True)
    codes = codes.reshape(-1)
    n_queries = int((class_sizes[codes] > 1).sum())
    n_skipped = n_items - n_queries
    if n_skipped:
        singletons = classes[class_sizes == 1]
        logger.warning(
            "Skipped %d of %d galaxies as queries because no other galaxy has their label: %s",
            n_skipped,
            n_items,
            singletons[:10].tolist(),
        )
    if n_queries == 0:
        raise ValueError(
            "no galaxy shares its label with another, so retrieval mAP is undefined. "
            "Pass at least two galaxies of some class"
        )

    # Reorder the galaxies by class, keeping the original order within a class,
    # so that the items relevant to a query are one contiguous range of columns.
    original_index = np.argsort(codes, kind="stable")
    unit = unit[original_index]
    sorted_codes = codes[original_index]
    class_starts = np.concatenate(([0], np.cumsum(class_sizes)))
    query_rows = np.flatnonzero(class_sizes[sorted_codes] > 1)

    rows_per_chunk = min(chunk_size or min(_CHUNK_ROWS, max(1, _CHUNK_BYTES // (4 * n_items))), n_queries)
    rows_per_subblock = min(max(1, _SUBBLOCK_SCORES // n_items), rows_per_chunk)
    ranking = _Ranking(
        n_items=n_items,
        k=k,
        k_eff=min(k, n_items - 1),
        original_index=original_index,
        class_starts=class_starts,
        rows_per_subblock=rows_per_subblock,
    )
    scores = np.empty((rows_per_chunk, n_items), dtype=np.float32)
    buffers: queue.SimpleQueue[tuple[np.ndarray, np.ndarray]] = queue.SimpleQueue()
    for _ in range(n_threads):
        buffers.put(
            (
                np.empty((rows_per_subblock, n_items), dtype=np.int32),
                np.empty((rows_per_subblock, n_items), dtype=np.int32),
            )
        )

    ap_full = np.empty(n_queries)
    ap_top = np.empty(n_queries)
    executor = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
    starts = range(0, n_queries, rows_per_chunk)
    progress = tqdm(starts, desc="retrieval queries", unit="chunk", disable=len(starts) < 4, leave=False)
    try:
        for start in progress:
            rows = query_rows[start : start + rows_per_chunk]
            block = np.matmul(unit[rows], unit.T, out=scores[: rows.size])
            _rank_chunk(
                block,
                rows,
                sorted_codes[rows],
                ranking,
                buffers,
                executor,
                out=(ap_full[start : start + rows.size], ap_top[start : start + rows.size]),
            )
    finally:
        if executor is not None:
            executor.shutdown()

    result: dict[str, Any] = {
        f"map_at_{k}": float(ap_top.mean()),
        "map": float(ap_full.mean()),
        "n_queries": n_queries,
        "n_skipped": int(n_skipped),
    }
    if per_query:
        input_rows = original_index[query_rows]
        result["ap"] = np.full(n_items, np.nan)
        result["ap"][input_rows] = ap_full
        result[f"ap_at_{k}"] = np.full(n_items, np.nan)
        result[f"ap_at_{k}"][input_rows] = ap_top
    return result


@dataclass(frozen=True)
class _Ranking:
    """Constants of one retrieval_metrics call, for the threads that rank blocks of queries.

    Rows and columns are positions in class order. ``original_index[p]`` is the
    input row of position p, and class c occupies positions
    ``class_starts[c]`` to ``class_starts[c + 1]``.
    """

    n_items: int
    k: int
    k_eff: int
    original_index: np.ndarray
    class_starts: np.ndarray
    rows_per_subblock: int


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _rank_chunk(
    block: np.ndarray,
    rows: np.ndarray,
    row_codes: np.ndarray,
    ranking: _Ranking,
    buffers: queue.SimpleQueue[tuple[np.ndarray, np.ndarray]],
    executor: ThreadPoolExecutor | None,
    out: tuple[np.ndarray, np.ndarray],
) -> None:
    """Write AP and AP@k of a chunk of queries into ``out``, splitting it into runs of one class.

    ``block`` is the (B, N) float32 scores of the queries at class-order
    positions ``rows``, whose class codes are ``row_codes``. Each thread of
    ``executor`` (or the caller, when it is None) takes a buffer pair from
    ``buffers`` for the run it ranks.
    """
    ap_full, ap_top = out

    def rank(bounds: tuple[int, int]) -> None:
        begin, end = bounds
        pair = buffers.get()
        try:
            code = int(row_codes[begin])
            full, top = _rank_subblock(block[begin:end], rows[begin:end], code, ranking, pair)
        finally:
            buffers.put(pair)
        ap_full[begin:end] = full
        ap_top[begin:end] = top

    subblocks = _subblock_bounds(row_codes, ranking.rows_per_subblock)
    if executor is None:
        for bounds in subblocks:
            rank(bounds)
    else:
        # list() waits for every run and re-raises the first error of any thread.
        list(executor.map(rank, subblocks))


def _subblock_bounds(row_codes: np.ndarray, max_rows: int) -> list[tuple[int, int]]:
    """Split a chunk into runs of at most ``max_rows`` consecutive queries of one class."""
    changes = np.flatnonzero(row_codes[1:] != row_codes[:-1]) + 1
    edges = [0, *changes.tolist(), row_codes.size]
    bounds = []
    for first, stop in zip(edges[:-1], edges[1:], strict=True):
        for begin in range(first, stop, max_rows):
            bounds.append((begin, min(begin + max_rows, stop)))
    return bounds


def _score_keys(scores: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
    """Write int32 sort keys of float32 scores between -2 and 2 into ``out``, with the lowest bit free.

    A float32 below 2 in magnitude has bit 30 clear, so its sign-and-magnitude
    bits map to an integer m in [0, 2**30) and the key is 2m for a score >= 0
    and -2m for a negative one. Equal scores get equal keys (0.0 and -0.0
    included), larger scores get larger keys, and the lowest bit stays free
    for a flag. Cosines of float32 unit vectors exceed 1 only by rounding
    errors far below 1, so every score here is in range. ``scratch`` is an
    int32 array of the same shape.
    """
    bits = scores.view(np.int32)
    np.left_shift(bits.view(np.uint32), 1, out=out.view(np.uint32))
    np.right_shift(bits, 31, out=scratch)
    np.bitwise_xor(out, scratch, out=out)
    np.subtract(out, scratch, out=out)


def _rank_subblock(
    scores: np.ndarray,
    rows: np.ndarray,
    code: int,
    ranking: _Ranking,
    buffers: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Compute AP and AP@k of queries of one class from their (h, N) float32 scores.

    ``rows`` contains each query's own position in class order. Each score
    becomes a key whose lowest bit is set for an item of class ``code``, and
    one int32 sort of the keys ranks every row. Within a group of tied scores
    the sort puts the other items before the relevant ones, and the query
    itself gets the lowest key. ``buffers`` are two int32 arrays with at least
    h rows of N columns.
    """
    n_rows = scores.shape[0]
    keys = buffers[0][:n_rows]
    scratch = buffers[1][:n_rows]
    relevant = slice(int(ranking.class_starts[code]), int(ranking.class_starts[code + 1]))

    _score_keys(scores, keys, scratch)
    keys[:, relevant] |= 1
    keys[np.arange(n_rows), rows] = _SELF_KEY
    keys.sort(axis=1)

    n_relevant = relevant.stop - relevant.start - 1
    ap = _average_precision_sorted(keys, n_relevant, scratch)
    ap_top = _average_precision_at_k_sorted(keys, scores, rows, relevant, ranking)
    return ap, ap_top


def _average_precision_sorted(keys: np.ndarray, n_relevant: int, scratch: np.ndarray) -> np.ndarray:
    """Compute AP over the whole ranking from row-sorted keys, grouping tied scores as scikit-learn does.

    ``keys`` is (h, N) from :func:`_rank_subblock`, ascending, with exactly
    ``n_relevant`` flagged keys per row and the query's own key at column 0.
    The j-th relevant key (ascending) at column p has n_relevant - j relevant
    items and N - p items at or above its score, unless its score ties with
    the key before it. ``scratch`` is an int32 array of the same shape.
    """
    n_rows, n_items = keys.shape
    np.bitwise_and(keys, 1, out=scratch)
    # np.flatnonzero is several times faster on booleans than on int32.
    flat_positions = np.flatnonzero(scratch.astype(bool))
    flat_keys = keys.reshape(-1)
    values = flat_keys[flat_positions] >> 1
    previous_values = flat_keys[flat_positions - 1] >> 1
    positions = flat_positions.reshape(n_rows, n_relevant) - (np.arange(n_rows) * n_items)[:, None]
    ranks = np.arange(n_relevant)
    terms = (n_relevant - ranks) / (n_items - positions)

    tied = np.flatnonzero(values == previous_values)
    if tied.size:
        first_relevant, group_start = _tied_groups(flat_keys, flat_positions, values, tied, n_items)
        terms.reshape(-1)[tied] = (n_relevant - first_relevant) / (n_items - group_start)
    return terms.mean(axis=1)


# Steps that _tied_groups walks back through a group of tied scores before it
# searches the row instead. Random embeddings rarely tie more than two scores,
# and fewer than two relevant items per row tie. Where more than
# _TIE_WALK_MAX_PER_ROW do on average, the groups tend to be long and the row
# is searched straight away.
_TIE_WALK_STEPS = 8
_TIE_WALK_MAX_PER_ROW = 4


def _tied_groups(
    flat_keys: np.ndarray, flat_positions: np.ndarray, values: np.ndarray, tied: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Find the group of tied scores of each relevant item whose score ties with the key before it.

    ``flat_keys`` is the flattened (h, N) row-sorted keys, ``flat_positions``
    the positions of its relevant keys (R per row, ascending within a row),
    ``values`` their scores (key >> 1) and ``tied`` the indices of the items
    to look up in those two arrays. Returns, per tied item, the rank among its
    row's relevant items of the first relevant item with the same score, and
    the column where the group of that score starts. Both come from walking
    back through the group, or from searching the row where the group is
    longer than ``_TIE_WALK_STEPS`` or ties are frequent.
    """
    n_rows = flat_keys.size // n_items
    n_relevant = flat_positions.size // n_rows
    rows, first_relevant = np.divmod(tied, n_relevant)
    start = flat_positions[tied]
    tied_values = values[tied]

    walking = np.arange(tied.size)
    walk_steps = _TIE_WALK_STEPS if tied.size <= _TIE_WALK_MAX_PER_ROW * n_rows else 0
    for _ in range(walk_steps):
        previous = flat_keys[start[walking] - 1]
        same = (previous >> 1) == tied_values[walking]
        walking = walking[same]
        if walking.size == 0:
            break
        first_relevant[walking] -= previous[same] & 1
        start[walking] -= 1

    # walking is ordered by row, so each row's remaining items are one run of it.
    row_changes = np.flatnonzero(np.diff(rows[walking])) + 1
    for items in np.split(walking, row_changes) if walking.size else []:
        row = int(rows[items[0]])
        row_keys = flat_keys[row * n_items : (row + 1) * n_items]
        row_values = values[row * n_relevant : (row + 1) * n_relevant]
        # Clearing the flag bit (2 * value) gives the lowest key of the group.
        start[items] = row * n_items + np.searchsorted(row_keys, 2 * tied_values[items], side="left")
        first_relevant[items] = np.searchsorted(row_values, tied_values[items], side="left")
    return first_relevant, start - rows * n_items


def _average_precision_at_k_sorted(
    keys: np.ndarray, scores: np.ndarray, rows: np.ndarray, relevant: slice, ranking: _Ranking
) -> np.ndarray:
    """Compute AP@k from row-sorted keys, ranking by descending score and then ascending input row.

    The last k keys of a row are its top k. When none of them ties with
    another or with the key just below, their flag bits are the relevance in
    rank order. Otherwise the row's ``scores`` (float32, in class order) are
    ranked again with the tie rule, see :func:`_average_precision_at_k_tied`.
    """
    n_items = ranking.n_items
    k_eff = ranking.k_eff
    normaliser = min(ranking.k, relevant.stop - relevant.start - 1)

    window = keys[:, n_items - k_eff - 1 :]
    relevance = (window[:, :0:-1] & 1).astype(np.float64)
    hits = np.cumsum(relevance, axis=1)
    ap = (hits / np.arange(1, k_eff + 1) * relevance).sum(axis=1) / normaliser

    values = window >> 1
    for row in np.flatnonzero((values[:, 1:] == values[:, :-1]).any(axis=1)):
        threshold = _score_of_key(int(window[row, 1]))
        ap[row] = _average_precision_at_k_tied(
            scores[row], int(rows[row]), threshold, relevant, normaliser, ranking
        )
    return ap


def _score_of_key(key: int) -> np.float32:
    """Return the float32 score whose sort key (see :func:`_score_keys`) is ``key``, flag bit ignored."""
    value = key >> 1
    bits = (-value | 0x80000000) if value < 0 else value
    return np.array(bits, dtype=np.uint32).view(np.float32)[()]


def _average_precision_at_k_tied(
    scores: np.ndarray,
    own_column: int,
    threshold: np.float32,
    relevant: slice,
    normaliser: int,
    ranking: _Ranking,
) -> float:
    """Compute AP@k of one query whose top k contains tied scores.

    ``threshold`` is the k-th largest score. The items scoring above it and
    the items at it with the lowest input rows fill the top k, which is then
    ordered by descending score and then by ascending input row. The query
    itself is left out.
    """
    above = np.flatnonzero(scores > threshold)
    above = above[above != own_column]
    at_threshold = np.flatnonzero(scores == threshold)
    at_threshold = at_threshold[at_threshold != own_column]
    n_at_threshold = ranking.k_eff - above.size
    if at_threshold.size > n_at_threshold:
        lowest = np.argpartition(ranking.original_index[at_threshold], n_at_threshold - 1)
        at_threshold = at_threshold[lowest[:n_at_threshold]]

    top = np.concatenate((above, at_threshold))
    ranked = top[np.lexsort((ranking.original_index[top], -scores[top]))]
    relevance = ((ranked >= relevant.start) & (ranked < relevant.stop)).astype(np.float64)
    hits = np.cumsum(relevance)
    return float((hits / np.arange(1, ranked.size + 1) * relevance).sum() / normaliser)
