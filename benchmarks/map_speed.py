"""Time retrieval_metrics against a per-query scikit-learn loop and against one product plus one sort.

Usage::

    .venv/bin/python benchmarks/map_speed.py                 # 20,000 random 512-d embeddings, 10 classes
    .venv/bin/python benchmarks/map_speed.py --ties          # sparse +-1 embeddings: most scores tie exactly
    .venv/bin/python benchmarks/map_speed.py --n 100000 --loop-queries 50

Everything runs in one process, so the ratios compare runs on the same machine
under the same load. The script prints three times: the toolkit's, the floor's
(one N x N similarity product plus one sort of every row) and the loop's (timed
on a subset of queries and scaled to all of them). Then it prints both ratios,
the largest difference of per-query AP and AP@k against the loop's values, the
toolkit's peak memory, and whether each aim is met.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score
from threadpoolctl import threadpool_info

from galaxalign.metrics import normalize_rows, retrieval_metrics

AIM_FLOOR_RATIO = 1.5
AIM_LOOP_SPEEDUP = 15.0
AIM_MAX_DIFFERENCE = 1e-6
AIM_PEAK_BYTES = 2**30

# Above this many bytes of N x N float32 scores, the floor is timed one block
# of rows at a time, because the whole matrix would not fit in memory.
FLOOR_FULL_MATRIX_BYTES = 4 * 2**30


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of galaxies (default 20000)")
    parser.add_argument("--dim", type=int, default=512, help="embedding width (default 512)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the embeddings and labels (default 0)")
    parser.add_argument("--k", type=int, default=5, help="k of mAP@k (default 5)")

    parser.add_argument(
        "--ties",
        action="store_true",
        help="use sparse +-1 embeddings whose cosines are exact multiples of 1/64, so most scores tie",
    )
    parser.add_argument(
        "--loop-queries",
        type=int,
        default=300,
        help="queries timed in the scikit-learn loop and compared value by value (default 300)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time the toolkit and the floor this many times, alternating, and keep the fastest (default 1)",
    )
    parser.add_argument(
        "--skip-floor",
        action="store_true",
        help="do not time the floor (it takes about as long as the toolkit)",
    )

    args = parser.parse_args()
    for name in ("n", "dim", "classes", "k"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.n < 2:
        parser.error(f"--n must be >= 2 so that each galaxy has another to query, got {args.n}")
    if args.loop_queries < 0:
        parser.error(f"--loop-queries must be >= 0, got {args.loop_queries}")
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    return args


def make_embeddings(n: int, dim: int, classes: int, seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return (n, dim) float32 embeddings and (n,) integer labels drawn uniformly from the classes.

    With ``ties``, each row has 16 or 64 entries of +-1 (as many as ``dim``
    allows) and zeros elsewhere. Unit rows then have entries +-1/4 or +-1/8,
    every cosine is a multiple of 1/64 that float32 represents exactly in any
    summation order, and in 512 dimensions most pairs share no entry and
    score exactly 0.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    if not ties:
        return rng.standard_normal((n, dim)).astype(np.float32), labels

    counts = [c for c in (16, 64) if c <= dim] or [min(4, dim) if dim >= 4 else 1]
    embeddings = np.zeros((n, dim), dtype=np.float32)
    for row in range(n):
        count = counts[rng.integers(len(counts))]
        columns = rng.choice(dim, size=count, replace=False)
        embeddings[row, columns] = rng.choice([-1.0, 1.0], size=count)
    return embeddings, labels


class Timing:
    """Wall-clock and CPU seconds (all threads of this process) of one timed step."""

    def __init__(self, wall: float = 0.0, cpu: float = 0.0) -> None:
        self.wall = wall
        self.cpu = cpu

    def __add__(self, other: Timing) -> Timing:
        return Timing(self.wall + other.wall, self.cpu + other.cpu)

    def __str__(self) -> str:
        return f"{self.wall:8.2f} s  (CPU {self.cpu:6.2f} s)"


def timed(function: Callable[[], Any]) -> tuple[Any, Timing]:
    wall = time.perf_counter()
    cpu = time.process_time()
    result = function()
    return result, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def time_floor(unit: np.ndarray) -> tuple[Timing, str]:
    """Time one N x N similarity product plus an in-place sort of every row, and describe the parts.

    The product is timed twice, as ``unit @ unit.T`` (numpy may use a
    symmetric kernel for that) and against a contiguous transposed copy, and
    the faster one counts. The sort is ``ndarray.sort``, the sort of
    ``np.sort`` without its copy.
    """
    n_items = unit.shape[0]
    if 4 * n_items * n_items <= FLOOR_FULL_MATRIX_BYTES:
        transposed = np.ascontiguousarray(unit.T)
        scores, symmetric = timed(lambda: unit @ unit.T)
        del scores
        scores, general = timed(lambda: unit @ transposed)
        _, sort = timed(lambda: scores.sort(axis=1))
        product = min(symmetric, general, key=lambda timing: timing.wall)
        note = (
            f"product {product.wall:.2f} s (unit @ unit.T {symmetric.wall:.2f} s, "
            f"against a transposed copy {general.wall:.2f} s), in-place sort {sort.wall:.2f} s"
        )
        return product + sort, note

    rows_per_block = max(1, (256 * 2**20) // (4 * n_items))
    block = np.empty((rows_per_block, n_items), dtype=np.float32)
    product = Timing()
    sort = Timing()
    for start in range(0, n_items, rows_per_block):
        rows = slice(start, min(start + rows_per_block, n_items))
        out = block[: rows.stop - rows.start]
        _, step = timed(lambda rows=rows, out=out: np.matmul(unit[rows], unit.T, out=out))
        product += step
        _, step = timed(lambda out=out: out.sort(axis=1))
        sort += step
    note = (
        f"N x N scores too large for memory, so timed in blocks of {rows_per_block} rows: "
        f"product {product.wall:.2f} s, in-place sort {sort.wall:.2f} s"
    )
    return product + sort, note


def reference_loop(
    unit: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, Timing]:
    """Score each query with scikit-learn and return AP, AP@k and the time the loop took.

    The score rows come from one float32 product of the queries' rows with
    all rows, the same BLAS routine (sgemm) that retrieval_metrics calls, so
    both rank the same float32 scores. A product of one row at a time goes
    through sgemv, whose rounding differs in the last bit, and that alone
    moves the AP of some queries by about 1e-6. The time counts the product
    and the ``average_precision_score`` calls. AP@k is a
    plain stable ranking (descending score, then lower row index), computed
    outside the timed part.
    """
    n_items = unit.shape[0]
    ap = np.empty(queries.size)
    ap_at_k = np.empty(queries.size)
    score_rows, timing = timed(lambda: unit[queries] @ unit.T)
    for i, query in enumerate(queries):
        scores = np.delete(score_rows[i], query)
        relevant = np.delete(labels, query) == labels[query]
        ap[i], step = timed(
            lambda relevant=relevant, scores=scores: average_precision_score(relevant, scores)
        )
        timing += step

        order = np.lexsort((np.arange(n_items - 1), -scores))
        ranked = relevant[order[:k]].astype(np.float64)
        precision_at_rank = np.cumsum(ranked) / np.arange(1, ranked.size + 1)
        ap_at_k[i] = (precision_at_rank * ranked).sum() / min(k, int(relevant.sum()))
    return ap, ap_at_k, timing


def peak_traced_bytes(function: Callable[[], Any]) -> int:
    """Return the peak of memory traced by tracemalloc while ``function`` runs, above what it held before."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def max_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def sorting_threads() -> int:
    """Return the number of CPU cores this process may use, retrieval_metrics's default thread count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    args = parse_args()
    embeddings, labels = make_embeddings(args.n, args.dim, args.classes, args.seed, args.ties)
    kind = "sparse +-1 (tie case)" if args.ties else "random normal"
    blas = ", ".join(
        f"{info['internal_api']} {info.get('architecture', '')} {info['num_threads']} threads"
        for info in threadpool_info()
    )
    print(
        f"{args.n} galaxies, {args.dim}-d {kind} float32 embeddings, {args.classes} classes, seed {args.seed}"
    )
    print(f"{os.cpu_count()} CPUs, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}; {blas}")
    print(f"load average at start {os.getloadavg()[0]:.1f}")

    # The toolkit runs first, so the growth of the process's peak resident
    # size is its own and not left over from the floor's N x N matrix.
    rss_before = max_rss_bytes()
    result, toolkit = timed(lambda: retrieval_metrics(embeddings, labels, k=args.k, per_query=True))
    rss_growth = max_rss_bytes() - rss_before
    traced_peak = peak_traced_bytes(lambda: retrieval_metrics(embeddings, labels, k=args.k))
    _, one_thread = timed(lambda: retrieval_metrics(embeddings, labels, k=args.k, n_threads=1))

    unit = normalize_rows(embeddings)
    floor, floor_note = (None, "") if args.skip_floor else time_floor(unit)
    for _ in range(args.repeat - 1):
        _, again = timed(lambda: retrieval_metrics(embeddings, labels, k=args.k))
        toolkit = min(toolkit, again, key=lambda timing: timing.wall)
        if floor is not None:
            again, again_note = time_floor(unit)
            if again.wall < floor.wall:
                floor, floor_note = again, again_note

    rng = np.random.default_rng(args.seed + 1)
    queries = np.flatnonzero(~np.isnan(result["ap"]))
    loop_queries = np.sort(rng.choice(queries, size=min(args.loop_queries, queries.size), replace=False))
    if loop_queries.size:
        loop_ap, loop_ap_at_k, loop_subset = reference_loop(unit, labels, loop_queries, args.k)
        scale = queries.size / loop_queries.size
        loop = Timing(loop_subset.wall * scale, loop_subset.cpu * scale)
        ap_difference = float(np.abs(result["ap"][loop_queries] - loop_ap).max())
        ap_at_k_difference = float(np.abs(result[f"ap_at_{args.k}"][loop_queries] - loop_ap_at_k).max())

    best = f", best of {args.repeat}" if args.repeat > 1 else ""
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    print()
    map_at_k = result[f"map_at_{args.k}"]
    print(f"mAP {result['map']:.6f}, mAP@{args.k} {map_at_k:.6f}, {result['n_queries']} queries")
    print(f"toolkit             {toolkit}  {sorting_threads()} sorting threads{best}")
    print(f"toolkit, 1 thread   {one_thread}")
    if floor is not None:
        print(f"floor               {floor}  {floor_note}{best}")
    else:
        print("floor               skipped (--skip-floor)")
    if loop_queries.size:
        print(
            f"sklearn loop        {loop}  timed on {loop_queries.size} random queries "
            f"({loop_subset.wall:.2f} s) and scaled by {queries.size}/{loop_queries.size}"
        )
    else:
        print("sklearn loop        skipped (--loop-queries 0)")
    print()

    if floor is not None:
        floor_ratio = toolkit.wall / floor.wall
        print(
            f"toolkit / floor           {floor_ratio:6.2f}  aim <= {AIM_FLOOR_RATIO}: "
            f"{verdict(floor_ratio <= AIM_FLOOR_RATIO)} "
            f"(CPU time {toolkit.cpu / floor.cpu:.2f}, 1 thread {one_thread.wall / floor.wall:.2f})"
        )
    if loop_queries.size:
        speedup = loop.wall / toolkit.wall
        print(
            f"loop / toolkit            {speedup:6.1f}  aim >= {AIM_LOOP_SPEEDUP:.0f}: "
            f"{verdict(speedup >= AIM_LOOP_SPEEDUP)} (CPU time {loop.cpu / toolkit.cpu:.1f})"
        )
        print(
            f"max |AP - sklearn|        {ap_difference:8.1e} over {loop_queries.size} queries, "
            f"aim <= {AIM_MAX_DIFFERENCE:.0e}: {verdict(ap_difference <= AIM_MAX_DIFFERENCE)}"
        )
        print(
            f"max |AP@{args.k} - plain|       {ap_at_k_difference:8.1e} over {loop_queries.size} queries, "
            f"aim <= {AIM_MAX_DIFFERENCE:.0e}: {verdict(ap_at_k_difference <= AIM_MAX_DIFFERENCE)}"
        )
    print(
        f"peak memory, tracemalloc  {traced_peak / 2**20:6.1f} MiB  aim < {AIM_PEAK_BYTES / 2**20:.0f} MiB: "
        f"{verdict(traced_peak < AIM_PEAK_BYTES)} (numpy and Python allocations during one call)"
    )
    print(
        f"peak memory, max RSS      {rss_growth / 2**20:6.1f} MiB  aim < {AIM_PEAK_BYTES / 2**20:.0f} MiB: "
        f"{verdict(rss_growth < AIM_PEAK_BYTES)} (growth of the process's peak resident size, first call)"
    )


if __name__ == "__main__":
    main()
