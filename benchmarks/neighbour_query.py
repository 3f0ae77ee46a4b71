"""Time one neighbour query (k = 10) against 100,000 and 1,000,000 stored embeddings, exact and faiss.

For each catalog size the script draws random 512-d float32 unit vectors with
integer ids, builds an exact NeighbourIndex, saves it, and opens it three ways
from the same memory-mapped vectors: exact, faiss-flat and faiss-ivf. It then
queries random galaxies of the catalog by id, one query per call, rotating
through the backends in blocks of 10 calls so that load from other processes
hits them all alike.
It prints median and 95th-percentile latency, build time and recall@10
against exact search, and whether exact search meets the aim of 20 ms at
100,000. A second table compares the kernels a single exact query could use
(BLAS matrix-vector product, einsum, torch, faiss, float16 storage).

Random vectors are the worst case for an IVF index because they have no
clusters. A third table gives its recall on vectors near a random 16- or
64-dimensional subspace, which cluster more like embeddings do. To measure
recall on real galaxy embeddings, use NeighbourIndex.estimate_recall.

    .venv/bin/python benchmarks/neighbour_query.py [--sizes 100000 1000000] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
from tabulate import tabulate
from threadpoolctl import threadpool_info, threadpool_limits

from galaxalign.search import NeighbourIndex, default_nlist

AIM_MS = 20.0
AIM_SIZE = 100_000


def random_unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    """Draw ``count`` Gaussian vectors and scale them to unit length, chunk by chunk to bound memory."""
    rng = np.random.default_rng(seed)
    vectors = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 100_000):
        block = rng.standard_normal((min(100_000, count - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[start : start + block.shape[0]] = block
    return vectors


def set_threads(count: int) -> threadpool_limits:
    """Limit BLAS and OpenMP (numpy, faiss) to ``count`` threads; use as a context manager."""
    faiss.omp_set_num_threads(count)
    return threadpool_limits(count)


def percentiles(seconds: list[float]) -> tuple[float, float]:
    milliseconds = np.asarray(seconds) * 1e3
    return float(np.median(milliseconds)), float(np.percentile(milliseconds, 95))


def time_rotating(
    calls: dict[str, Callable[[int], object]], n_calls: int, block: int = 10
) -> dict[str, list[float]]:
    """Time ``n_calls`` calls of each function, rotating through the functions in blocks of ``block`` calls.

    Call number i passes i to the function. Each block starts with one
    untimed call, so threads left spinning by the previous function and cold
    caches do not count against the next one.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for block_start in range(0, n_calls, block):
        numbers = range(block_start, min(block_start + block, n_calls))
        for name, call in calls.items():
            call(numbers[0])
            for number in numbers:
                started = time.perf_counter()
                call(number)
                times[name].append(time.perf_counter() - started)
    return times


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true neighbours that the search found."""
    overlap = [np.intersect1d(a, b).size for a, b in zip(found, truth, strict=True)]
    return float(np.mean(overlap) / truth.shape[1])


def benchmark_size(args: argparse.Namespace, count: int, workdir: Path) -> list[list[object]]:
    """Build the three backends over ``count`` random vectors and time single queries by id."""
    print(f"\n{count:,} embeddings of dimension {args.dim}: generating vectors", flush=True)
    vectors = random_unit_vectors(count, args.dim, args.seed)
    ids = np.arange(count, dtype=np.int64) + 587_722_981_742_000_000

    started = time.perf_counter()
    exact_index = NeighbourIndex(vectors, ids, backend="exact")
    exact_build = time.perf_counter() - started
    del vectors
    path = exact_index.save(workdir / f"index_{count}")
    del exact_index

    indexes = {"exact": NeighbourIndex.load(path, backend="exact")}
    indexes["faiss-flat"] = NeighbourIndex.load(path, backend="faiss-flat")
    started = time.perf_counter()
    ivf_index = NeighbourIndex.load(path, backend="faiss-ivf")
    ivf_build = time.perf_counter() - started

    rng = np.random.default_rng(args.seed + 1)
    query_ids = ids[rng.choice(count, size=args.queries, replace=False)]

    def query_ivf(number: int, nprobe: int) -> object:
        ivf_index.nprobe = nprobe
        return ivf_index.query_ids(query_ids[number], k=args.k)

    truth = indexes["exact"].query_ids(query_ids, k=args.k).rows
    recalls = {
        name: recall(index.query_ids(query_ids, k=args.k).rows, truth) for name, index in indexes.items()
    }
    for nprobe in args.nprobe:
        ivf_index.nprobe = nprobe
        recalls[f"faiss-ivf nprobe={nprobe}"] = recall(ivf_index.query_ids(query_ids, k=args.k).rows, truth)
    builds = {"exact": exact_build, "faiss-flat": 0.0}

    rows = []
    for threads in args.threads:
        calls: dict[str, Callable[[int], object]] = {
            name: (lambda number, index=index: index.query_ids(query_ids[number], k=args.k))
            for name, index in indexes.items()
        }
        for nprobe in args.nprobe:
            calls[f"faiss-ivf nprobe={nprobe}"] = lambda number, nprobe=nprobe: query_ivf(number, nprobe)
        with set_threads(threads):
            times = time_rotating(calls, args.queries)

        for name, seconds in times.items():
            median, p95 = percentiles(seconds)
            build = builds.get(name, ivf_build)
            row = [f"{count:,}", name, threads, f"{build:.1f}", f"{median:.2f}", f"{p95:.2f}", recalls[name]]
            rows.append(row)
    print(f"IVF index: {default_nlist(count)} lists; exact build includes validation and normalisation")
    return rows


def low_rank_unit_vectors(count: int, dim: int, rank: int, seed: int) -> np.ndarray:
    """Draw unit vectors near a random ``rank``-dimensional subspace: a stand-in for clustered embeddings.

    Each vector is a Gaussian point of the subspace plus isotropic noise with
    30% of its length, scaled to unit length.
    """
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, dim), dtype=np.float32) / np.sqrt(rank)
    vectors = rng.standard_normal((count, rank), dtype=np.float32) @ basis
    vectors += 0.3 * rng.standard_normal((count, dim), dtype=np.float32) / np.sqrt(dim)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def low_rank_recall_rows(args: argparse.Namespace, count: int, ranks: tuple[int, ...]) -> list[list[object]]:
    """Measure the IVF index's recall@k on low-rank vectors of each rank, for each nprobe."""
    rows = []
    for rank in ranks:
        vectors = low_rank_unit_vectors(count, args.dim, rank, args.seed)
        ids = np.arange(count)
        ivf_index = NeighbourIndex(vectors, ids, backend="faiss-ivf")
        exact_index = NeighbourIndex(vectors, ids, backend="exact")
        query_ids = np.random.default_rng(args.seed + 2).choice(count, size=args.queries, replace=False)
        truth = exact_index.query_ids(query_ids, k=args.k).rows
        for nprobe in args.nprobe:
            ivf_index.nprobe = nprobe
            rows.append(
                [f"{count:,}", rank, nprobe, recall(ivf_index.query_ids(query_ids, k=args.k).rows, truth)]
            )
    return rows


def kernel_rows(args: argparse.Namespace) -> list[list[object]]:
    """Time the kernels one exact query could use at AIM_SIZE rows, excluding the top-k step."""
    import torch

    vectors = random_unit_vectors(AIM_SIZE, args.dim, args.seed)
    query = vectors[123].copy()
    halves = vectors.astype(np.float16)
    torch_vectors, torch_query = torch.from_numpy(vectors), torch.from_numpy(query)
    torch_halves, torch_half_query = torch_vectors.half(), torch_query.half()
    scalar_quantized = faiss.IndexScalarQuantizer(
        args.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    scalar_quantized.add(vectors)

    def numpy_from_float16(number: int) -> np.ndarray:
        scores = np.empty(AIM_SIZE, dtype=np.float32)
        for start in range(0, AIM_SIZE, 8192):
            np.matmul(
                halves[start : start + 8192].astype(np.float32), query, out=scores[start : start + 8192]
            )
        return scores

    calls: dict[str, Callable[[int], object]] = {
        "numpy matmul (BLAS sgemv), float32": lambda number: vectors @ query,
        "numpy einsum, float32 (the library's single query)": lambda number: np.einsum(
            "ij,j->i", vectors, query
        ),
        "torch mv, float32": lambda number: torch.mv(torch_vectors, torch_query),
        "faiss.knn with top 10, float32 (faiss-flat)": lambda number: faiss.knn(
            query[None], vectors, args.k, faiss.METRIC_INNER_PRODUCT
        ),
        "numpy, float16 converted per chunk": numpy_from_float16,
        "torch mv, float16": lambda number: torch.mv(torch_halves, torch_half_query),
        "faiss IndexScalarQuantizer fp16 with top 10": lambda number: scalar_quantized.search(
            query[None], args.k
        ),
        "np.argpartition top 10 of 100,000 scores": lambda number: np.argpartition(
            vectors[:, 0], AIM_SIZE - args.k
        ),
    }
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        with set_threads(threads):
            times = time_rotating(calls, args.kernel_repeats)
        for name, seconds in times.items():
            median, p95 = percentiles(seconds)
            rows.append([name, threads, f"{median:.2f}", f"{p95:.2f}"])

    exact = vectors @ query
    top_exact = np.argsort(-exact)[: args.k]
    top_half = np.argsort(-torch.mv(torch_halves, torch_half_query).float().numpy())[: args.k]
    error = np.abs(torch.mv(torch_halves, torch_half_query).float().numpy() - exact).max()
    print(
        f"float16 storage: largest score error {error:.1e}, "
        f"{np.intersect1d(top_exact, top_half).size} of {args.k} exact neighbours kept for one query"
    )
    return rows


def describe_machine() -> str:
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    blas = ", ".join(
        f"{info['internal_api']} {info.get('version') or ''}".strip() for info in threadpool_info()
    )
    return (
        f"{model}, {os.cpu_count()} logical cores, {memory:.0f} GiB RAM; numpy {np.__version__}, "
        f"faiss {faiss.__version__}; thread pools: {blas}; load average {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="catalog sizes")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--queries", type=int, default=100, help="timed single queries per backend and size")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="BLAS and OpenMP thread counts"
    )
    parser.add_argument(
        "--nprobe", type=int, nargs="+", default=[16, 64, 256], help="IVF lists read per query"
    )
    parser.add_argument(
        "--low-rank-size",
        type=int,
        default=100_000,
        help="catalog size of the low-rank recall table (0 skips)",
    )
    parser.add_argument("--kernel-repeats", type=int, default=30, help="timed calls per kernel (0 skips)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(describe_machine())
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="neighbour_query_") as workdir:
        for count in args.sizes:
            rows += benchmark_size(args, count, Path(workdir))

    headers = ["catalog", "backend", "threads", "build s", "median ms", "p95 ms", f"recall@{args.k}"]
    print("\n" + tabulate(rows, headers=headers, tablefmt="github", floatfmt=".3f"))
    for row in rows:
        if row[0] == f"{AIM_SIZE:,}" and row[1] == "exact":
            verdict = "met" if float(row[4]) < AIM_MS else "not met"
            print(
                f"aim (exact median under {AIM_MS:.0f} ms at {AIM_SIZE:,}) with {row[2]} thread(s): {verdict}"
            )

    if args.low_rank_size > 0:
        print(f"\nrecall@{args.k} of faiss-ivf on vectors near a random low-dimensional subspace (30% noise)")
        low_rank = low_rank_recall_rows(args, args.low_rank_size, ranks=(16, 64))
        headers = ["catalog", "subspace dim", "nprobe", f"recall@{args.k}"]
        print(tabulate(low_rank, headers=headers, tablefmt="github", floatfmt=".3f"))

    if args.kernel_repeats > 0:
        print(f"\nkernels for one exact query against {AIM_SIZE:,} x {args.dim}, without top-k unless stated")
        kernels = kernel_rows(args)
        print(tabulate(kernels, headers=["kernel", "threads", "median ms", "p95 ms"], tablefmt="github"))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
