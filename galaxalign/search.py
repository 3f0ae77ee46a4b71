"""Neighbour search over galaxy embeddings: exact cosine search, or a faiss index for large catalogs."""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from galaxalign.metrics import normalize_rows
from galaxalign.object_ids import IdLookup, as_id_array

if TYPE_CHECKING:
    from galaxalign.embed import EmbeddingSet

logger = logging.getLogger(__name__)

Backend = Literal["auto", "exact", "faiss-flat", "faiss-ivf"]
BACKENDS: tuple[str, ...] = ("auto", "exact", "faiss-flat", "faiss-ivf")

# With backend="auto", catalogs of at least this many galaxies get a faiss IVF index. 250,000
# rows of 512-d float32 are 512 MB, which one exact query reads from memory. One core streams
# roughly 10-25 GB/s (an estimate for current x86 servers), so such a query takes 20-50 ms.
# On a shared 2-core AMD EPYC, benchmarks/neighbour_query.py measured a median of 14 ms at
# 100,000 rows and 170-190 ms at 1,000,000.
DEFAULT_FAISS_THRESHOLD = 250_000

# Inverted lists an IVF index reads per query. With the default sqrt(N) lists, 64 lists are
# about 6% of a 1,000,000-galaxy catalog. Recall depends on the data, so
# benchmarks/neighbour_query.py prints it for several values; tune it per catalog with
# NeighbourIndex.estimate_recall.
DEFAULT_NPROBE = 64

# Catalog rows per matrix product in exact search. A block of 256 queries against one chunk
# allocates two 256 x 65,536 float32 arrays, 64 MB each.
DEFAULT_CHUNK_ROWS = 65_536
QUERY_BLOCK = 256

# Below this many queries, exact search runs one np.einsum per query instead of a BLAS matrix
# product. On a 2-core AMD EPYC with numpy 2.4 and OpenBLAS 0.3.31, one query against
# 100,000 x 512 took 8.7 ms by einsum and 15.4 ms by matmul. Four queries took 35 ms both ways.
EINSUM_MAX_QUERIES = 4

INDEX_FORMAT = "galaxalign-neighbour-index"
INDEX_FORMAT_VERSION = 1
MANIFEST_NAME = "index.json"
IVF_FILE_NAME = "faiss_ivf.index"
INDEX_FILE_NAMES = frozenset({"vectors.npy", "ids.npy", "labels.npy", MANIFEST_NAME, IVF_FILE_NAME})


@dataclass(frozen=True)
class SearchResult:
    """Nearest neighbours of M queries, k per query, best first.

    ``ids`` (M, k) contains the neighbours' object ids (int64 or str, as
    stored in the index), ``rows`` (M, k) their int64 row positions in the
    index, and ``scores`` (M, k) the float32 cosine similarities. ``labels``
    (M, k) contains the neighbours' labels when the index has labels.
    ``query_ids`` (M,) contains the object id of each query for :meth:`NeighbourIndex.query_ids`, and is
    None for queries given as vectors. ``class_names`` maps integer labels to
    names when the index has them. ``exact`` is False when an approximate
    index produced the result.
    """

    ids: np.ndarray
    rows: np.ndarray
    scores: np.ndarray
    labels: np.ndarray | None = None
    query_ids: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    exact: bool = True

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def k(self) -> int:
        """Number of neighbours per query."""
        return int(self.ids.shape[1])

    def to_frame(self) -> pd.DataFrame:
        """Return one row per (query, neighbour) pair as a pandas DataFrame.

        The first column is ``query_id`` for queries by object id and
        ``query_index`` (0-based position in the query array) for vector
        queries. Then come ``rank`` (1 for the nearest),
        ``neighbour_id``, ``neighbour_row`` (row in the index), ``similarity``
        (cosine, float32), and ``label`` and ``class_name`` when known. Integer
        ids stay int64, so 18-digit SDSS objids keep every digit.
        """
        n_queries, k = self.ids.shape
        if self.query_ids is not None:
            first_column, queries = "query_id", self.query_ids
        else:
            first_column, queries = "query_index", np.arange(n_queries)
        columns: dict[str, np.ndarray] = {
            first_column: np.repeat(queries, k),
            "rank": np.tile(np.arange(1, k + 1), n_queries),
            "neighbour_id": self.ids.reshape(-1),
            "neighbour_row": self.rows.reshape(-1),
            "similarity": self.scores.reshape(-1),
        }
        if self.labels is not None:
            columns["label"] = self.labels.reshape(-1)
            if self.class_names is not None:
                columns["class_name"] = np.asarray(self.class_names, dtype=str)[columns["label"]]
        return pd.DataFrame(columns)


class NeighbourIndex:
    """Cosine-similarity neighbour index over galaxy embeddings with their object ids.

    ``embeddings`` is an (N, D) array of real numbers, one row per galaxy, in
    any scale: each row is scaled to unit length and stored as float32.
    ``ids`` contains N unique object ids, either integers (stored as int64, for
    example 18-digit SDSS objids) or strings. Floats are rejected because a
    float64 keeps only 15-16 significant digits. ``labels`` (optional) contains
    one label per galaxy, either integers or strings. ``class_names``
    (optional) names the integer labels 0..C-1.

    ``backend`` selects how neighbours are found:

    - ``"exact"``: chunked matrix products of float32 unit vectors. Works on
      memory-mapped vectors larger than RAM. Ties in the score are broken by
      the lower row index, so results are deterministic.
    - ``"faiss-flat"``: faiss's brute-force inner-product kernel
      (``faiss.knn``) over the same vectors, without a copy. Exact like
      ``"exact"``, but tied scores come in faiss's own order. With one
      thread it returned single queries faster than ``"exact"`` in
      benchmarks/neighbour_query.py; batches of many queries run slower.
    - ``"faiss-ivf"``: a faiss ``IndexIVFFlat`` with ``nlist`` lists (default
      about sqrt(N)) trained by k-means on a seeded sample. A query reads
      only ``nprobe`` lists, so it is fast but approximate. Its recall depends
      on how clustered the embeddings are: measure it with
      :meth:`estimate_recall`. The index keeps its own copy of the vectors,
      so memory doubles.
    - ``"auto"`` (default): ``"exact"`` below ``faiss_threshold`` galaxies,
      ``"faiss-ivf"`` from there on. When faiss is not installed, ``"auto"``
      stays exact and logs a warning.

    Raises ``ValueError`` naming the row and object id of a row that
    contains NaN or inf or is all zeros, naming a duplicated id, or when
    shapes do not match. Raises ``ImportError`` when a faiss backend is
    requested and faiss is not installed.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        ids: Sequence[Any] | np.ndarray,
        labels: Sequence[Any] | np.ndarray | None = None,
        *,
        class_names: Sequence[str] | None = None,
        backend: Backend = "auto",
        faiss_threshold: int = DEFAULT_FAISS_THRESHOLD,
        nlist: int | None = None,
        nprobe: int = DEFAULT_NPROBE,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        seed: int = 0,
    ) -> None:
        array = np.asarray(embeddings)
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(
                f"embeddings must be a 2-D array of shape (n_galaxies, dim) with both sizes >= 1, "
                f"got shape {array.shape}"
            )
        id_array = as_id_array(ids, "ids")
        if id_array.shape[0] != array.shape[0]:
            raise ValueError(
                f"ids has {id_array.shape[0]} entries but embeddings has {array.shape[0]} rows. "
                "Pass one object id per embedding row"
            )
        _check_positive_int(faiss_threshold, "faiss_threshold")
        _check_positive_int(nprobe, "nprobe")
        if nlist is not None:
            _check_positive_int(nlist, "nlist")

        self._ids = id_array
        self._lookup = IdLookup(id_array)
        self._lookup.check_unique()
        self._labels = _as_label_array(labels, array.shape[0], class_names)
        self._class_names = tuple(str(name) for name in class_names) if class_names is not None else None
        self._chunk_rows = _check_positive_int(chunk_rows, "chunk_rows")
        self._vectors = _unit_rows(array, id_array)
        self._nprobe = int(nprobe)
        self._ivf: Any = None

        self._backend = _resolve_backend(backend, len(self), faiss_threshold)
        if self._backend == "faiss-ivf":
            self._ivf = _build_ivf(self._vectors, nlist, self._nprobe, seed)

    @classmethod
    def from_embedding_set(cls, embedding_set: EmbeddingSet, **options: Any) -> NeighbourIndex:
        """Build an index over the image embeddings of a set read by ``galaxalign.embed.read_embedding_set``.

        Takes the set's ids, labels and class names. ``options`` are the
        keyword arguments of :class:`NeighbourIndex`.
        """
        return cls(
            embedding_set.images,
            embedding_set.ids,
            embedding_set.labels,
            class_names=embedding_set.class_names,
            **options,
        )

    def __len__(self) -> int:
        return int(self._vectors.shape[0])

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._lookup

    def __repr__(self) -> str:
        return f"NeighbourIndex(count={len(self)}, dim={self.dim}, backend={self._backend!r})"

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self._vectors.shape[1])

    @property
    def backend(self) -> str:
        """The backend in use: ``"exact"``, ``"faiss-flat"`` or ``"faiss-ivf"``."""
        return self._backend

    @property
    def exact(self) -> bool:
        """Whether every search returns the true nearest neighbours (False for ``"faiss-ivf"``)."""
        return self._backend != "faiss-ivf"

    @property
    def ids(self) -> np.ndarray:
        """Object ids (N,), int64 or str, in row order."""
        return self._ids

    @property
    def labels(self) -> np.ndarray | None:
        """Labels (N,) in row order, or None."""
        return self._labels

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """Names of the integer labels 0..C-1, or None."""
        return self._class_names

    @property
    def vectors(self) -> np.ndarray:
        """Unit-length float32 embeddings (N, D); a read-only memory map after :meth:`load` with mmap."""
        return self._vectors

    @property
    def nprobe(self) -> int:
        """Inverted lists a ``"faiss-ivf"`` query reads; more lists give higher recall and slower queries."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = _check_positive_int(value, "nprobe")
        if self._ivf is not None:
            self._ivf.nprobe = self._nprobe

    def rows_of(self, ids: Any) -> np.ndarray:
        """Return the int64 row of each object id in ``ids`` (one id or a sequence).

        Integer ids also match decimal strings and the reverse, so an index
        with string ids (as written by ``galaxalign.embed``) finds an SDSS
        objid given as an int. Raises ``KeyError`` listing the ids that are
        not in the index, and ``TypeError`` for a float or other non-id value.
        """
        return self._lookup.rows(ids)

    def vectors_of(self, ids: Any) -> np.ndarray:
        """Return the unit float32 embeddings (M, D) of the given object ids."""
        return np.asarray(self._vectors[self.rows_of(ids)], dtype=np.float32)

    def search(
        self, vectors: np.ndarray, k: int = 10, exclude: Sequence[Any] | np.ndarray | None = None
    ) -> SearchResult:
        """Find the ``k`` galaxies most similar by cosine to each query vector.

        ``vectors`` is (D,) for one query or (M, D), in any scale: each query
        is scaled to unit length. ``exclude`` optionally contains one object
        id per query to leave out of that query's neighbours, for example the
        galaxy whose image produced the query. Raises ``ValueError`` when a
        query contains NaN or inf or is all zeros, when D differs from the
        index, or when ``k`` exceeds the galaxies available.
        """
        queries = _unit_queries(vectors, self.dim)
        if exclude is None:
            exclude_rows = np.full(queries.shape[0], -1, dtype=np.int64)
        else:
            exclude_rows = self.rows_of(exclude)
            if exclude_rows.shape[0] != queries.shape[0]:
                raise ValueError(
                    f"exclude has {exclude_rows.shape[0]} ids but there are {queries.shape[0]} queries. "
                    "Pass one object id per query"
                )
        k = self._check_k(k, excluding=exclude is not None)
        return self._search_unit(queries, k, exclude_rows)

    def query_ids(self, ids: Any, k: int = 10) -> SearchResult:
        """Find the ``k`` nearest neighbours of galaxies already in the index, each galaxy excluding itself.

        ``ids`` is one object id or a sequence of them. Raises ``KeyError``
        for ids not in the index and ``ValueError`` when ``k`` exceeds N - 1.
        """
        rows = self.rows_of(ids)
        k = self._check_k(k, excluding=True)
        queries = np.asarray(self._vectors[rows], dtype=np.float32)
        result = self._search_unit(queries, k, rows)
        return SearchResult(
            ids=result.ids,
            rows=result.rows,
            scores=result.scores,
            labels=result.labels,
            query_ids=self._ids[rows],
            class_names=result.class_names,
            exact=result.exact,
        )

    def estimate_recall(self, k: int = 10, n_queries: int = 200, seed: int = 0) -> float:
        """Estimate recall@k of this index: the share of true k nearest neighbours that a search returns.

        Queries ``n_queries`` galaxies of the index drawn at random (each
        excluding itself) with the index and with exact search, and returns
        the mean overlap divided by k. An exact backend returns 1.0 without
        searching. Use it to choose ``nprobe`` for a ``"faiss-ivf"`` index on
        real embeddings.
        """
        k = self._check_k(k, excluding=True)
        n_queries = _check_positive_int(n_queries, "n_queries")
        if self.exact:
            return 1.0
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(self), size=min(n_queries, len(self)), replace=False))
        queries = np.asarray(self._vectors[rows], dtype=np.float32)
        found, _ = self._search_rows(queries, k, rows)
        truth, _ = exact_top_k(self._vectors, queries, k, rows, self._chunk_rows)
        overlap = [np.intersect1d(a, b).size for a, b in zip(found, truth, strict=True)]
        return float(np.mean(overlap) / k)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the index to the folder ``path`` and return it.

        The folder contains ``vectors.npy`` (float32 unit rows, memory-mappable),
        ``ids.npy``, ``labels.npy`` when there are labels, ``index.json``
        (format version, backend, dim, count, class names, IVF parameters)
        and, for ``"faiss-ivf"``, the trained faiss index ``faiss_ivf.index``.
        The files are written to a temporary folder beside ``path`` and moved
        into place at the end. Raises ``FileExistsError`` when ``path``
        exists, unless ``overwrite`` is True.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"{path} already exists. Pass overwrite=True to replace it, or choose a new path"
            )
        if path.exists():
            # Overwriting removes the old folder, so it must be an index and not, say, a home folder,
            # and it must contain nothing but what an index writes.
            _read_index_manifest(path)
            foreign = sorted(p.name for p in path.iterdir() if p.name not in INDEX_FILE_NAMES)
            if foreign:
                raise FileExistsError(
                    f"{path} contains files that the index did not write ({', '.join(foreign[:5])}); "
                    "move them elsewhere or choose a new path, so overwrite=True deletes nothing of yours"
                )
        path.parent.mkdir(parents=True, exist_ok=True)

        staging = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
        staging.mkdir()
        try:
            np.save(staging / "vectors.npy", np.asarray(self._vectors, dtype=np.float32))
            np.save(staging / "ids.npy", self._ids)
            if self._labels is not None:
                np.save(staging / "labels.npy", self._labels)
            if self._ivf is not None:
                _require_faiss(self._backend).write_index(self._ivf, str(staging / IVF_FILE_NAME))
            manifest = {
                "format": INDEX_FORMAT,
                "format_version": INDEX_FORMAT_VERSION,
                "galaxalign_version": _package_version(),
                "backend": self._backend,
                "count": len(self),
                "dim": self.dim,
                "id_dtype": self._ids.dtype.str,
                "has_labels": self._labels is not None,
                "class_names": list(self._class_names) if self._class_names is not None else None,
                "nprobe": self._nprobe,
                "nlist": int(self._ivf.nlist) if self._ivf is not None else None,
                "chunk_rows": self._chunk_rows,
            }
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
            if path.exists():
                _remove_path(path)
            staging.replace(path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("saved a neighbour index of %d galaxies (%s) to %s", len(self), self._backend, path)
        return path

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True, backend: Backend | None = None) -> NeighbourIndex:
        """Open an index folder written by :meth:`save`.

        With ``mmap`` the vectors stay on disk and are read as queries need
        them (a faiss IVF index is memory-mapped too). ``backend`` overrides
        the saved backend: ``"exact"`` or ``"faiss-flat"`` need only the
        vectors, and ``"faiss-ivf"`` trains a new IVF index when the folder
        has none. A saved ``"faiss-ivf"`` index opens as ``"exact"`` with a
        warning when faiss is not installed. The vectors are trusted as
        written: their norms are not checked again. Raises
        ``FileNotFoundError`` or ``ValueError`` naming what is missing or
        inconsistent.
        """
        path = Path(path)
        manifest = _read_index_manifest(path)
        count, dim = int(manifest["count"]), int(manifest["dim"])

        vectors = _load_array(path / "vectors.npy", mmap)
        if vectors.dtype != np.float32 or vectors.shape != (count, dim):
            raise ValueError(
                f"{path / 'vectors.npy'} contains {vectors.dtype} {vectors.shape}, but {MANIFEST_NAME} "
                f"records float32 ({count}, {dim}). The folder is damaged: save the index again"
            )
        ids = _load_array(path / "ids.npy", False)
        if ids.shape != (count,) or ids.dtype.kind not in "iU":
            raise ValueError(
                f"{path / 'ids.npy'} contains {ids.dtype} {ids.shape}, but {MANIFEST_NAME} records {count} "
                "integer or string ids. The folder is damaged: save the index again"
            )
        labels = _load_array(path / "labels.npy", False) if manifest.get("has_labels") else None
        if labels is not None and labels.shape != (count,):
            raise ValueError(
                f"{path / 'labels.npy'} has shape {labels.shape}, but {MANIFEST_NAME} records {count} "
                "galaxies. The folder is damaged: save the index again"
            )

        index = cls.__new__(cls)
        index._vectors = vectors
        index._ids = ids
        index._lookup = IdLookup(ids)
        index._labels = labels
        names = manifest.get("class_names")
        index._class_names = tuple(names) if names is not None else None
        index._chunk_rows = int(manifest.get("chunk_rows") or DEFAULT_CHUNK_ROWS)
        index._nprobe = int(manifest.get("nprobe") or DEFAULT_NPROBE)
        index._ivf = None
        index._backend = index._open_backend(path, manifest, backend, mmap)
        logger.info("loaded a neighbour index of %d galaxies (%s) from %s", count, index._backend, path)
        return index

    def _open_backend(
        self, path: Path, manifest: dict[str, Any], requested: Backend | None, mmap: bool
    ) -> str:
        """Choose the backend of a loaded index and open or build its faiss IVF index when needed."""
        saved = str(manifest["backend"])
        chosen = saved if requested is None else requested
        if chosen == "auto":
            chosen = saved
        if chosen not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {chosen!r}")
        if not chosen.startswith("faiss"):
            return chosen

        faiss = _import_faiss()
        if faiss is None and requested is None:
            logger.warning(
                "faiss is not installed, so the %s index in %s opens as exact search. "
                "Install faiss-cpu to use the saved backend",
                chosen,
                path,
            )
            return "exact"
        faiss = _require_faiss(chosen)
        if chosen == "faiss-flat":
            return chosen

        ivf_path = path / IVF_FILE_NAME
        if not ivf_path.is_file():
            self._ivf = _build_ivf(self._vectors, manifest.get("nlist"), self._nprobe, seed=0)
            return chosen

        flags = faiss.IO_FLAG_MMAP if mmap else 0
        ivf = faiss.read_index(str(ivf_path), flags)
        if ivf.ntotal != len(self) or ivf.d != self.dim:
            raise ValueError(
                f"{ivf_path} indexes {ivf.ntotal} vectors of dimension {ivf.d}, but {MANIFEST_NAME} records "
                f"{len(self)} of dimension {self.dim}. The folder is damaged: save the index again"
            )
        ivf.nprobe = self._nprobe
        self._ivf = ivf
        return chosen

    def _check_k(self, k: int, excluding: bool) -> int:
        k = _check_positive_int(k, "k")
        available = len(self) - 1 if excluding else len(self)
        if k > available:
            if excluding:
                reason = f"each query galaxy is excluded, so only {available} others remain"
            else:
                reason = f"the index contains only {available} {'galaxy' if available == 1 else 'galaxies'}"
            raise ValueError(f"k={k} is larger than the catalog: {reason}. Pass k <= {available}")
        return k

    def _search_unit(self, queries: np.ndarray, k: int, exclude_rows: np.ndarray) -> SearchResult:
        rows, scores = self._search_rows(queries, k, exclude_rows)
        return SearchResult(
            ids=self._ids[rows],
            rows=rows,
            scores=scores,
            labels=self._labels[rows] if self._labels is not None else None,
            class_names=self._class_names,
            exact=self.exact,
        )

    def _search_rows(
        self, queries: np.ndarray, k: int, exclude_rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return rows (M, k) and float32 scores (M, k) for unit ``queries``.

        ``exclude_rows`` (M,) contains a row to leave out per query, or -1 for none.
        """
        if self._backend == "exact":
            return exact_top_k(self._vectors, queries, k, exclude_rows, self._chunk_rows)
        extra = int((exclude_rows >= 0).any())
        if self._backend == "faiss-flat":
            faiss = _require_faiss(self._backend)
            vectors = np.ascontiguousarray(self._vectors, dtype=np.float32)
            scores, rows = faiss.knn(queries, vectors, k + extra, faiss.METRIC_INNER_PRODUCT)
        else:
            scores, rows = self._ivf.search(queries, k + extra)
        return _drop_excluded(rows, scores, exclude_rows, k, self._nprobe)


def exact_top_k(
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    exclude_rows: np.ndarray | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Find the k rows of ``vectors`` with the largest inner product with each query, by matrix products.

    ``vectors`` (N, D) and ``queries`` (M, D) are float32, usually unit
    rows, and ``vectors`` may be a memory map: it is read ``chunk_rows``
    rows at a time. ``exclude_rows`` (M,) gives a row to leave out per query,
    or -1 for none. Returns int64 rows (M, k) and float32 scores (M, k),
    ordered by descending score and then ascending row, so ties resolve to
    the lower row. Needs k <= N (k <= N - 1 where a row is excluded).

    NOTE: a single query sums its products with np.einsum and a batch with
    BLAS, in different orders. Their float32 scores differed by up to 6e-7
    on random 512-d unit vectors, so neighbours closer than that in score
    can swap places between a single query and a batch.
    """
    n_queries = queries.shape[0]
    if exclude_rows is None:
        exclude_rows = np.full(n_queries, -1, dtype=np.int64)
    all_rows = np.empty((n_queries, k), dtype=np.int64)
    all_scores = np.empty((n_queries, k), dtype=np.float32)

    starts = range(0, n_queries, QUERY_BLOCK)
    for start in tqdm(starts, desc="neighbour search", unit="block", disable=len(starts) < 4, leave=False):
        block = queries[start : start + QUERY_BLOCK]
        block_exclude = exclude_rows[start : start + QUERY_BLOCK]
        best_rows = np.empty((block.shape[0], 0), dtype=np.int64)
        best_scores = np.empty((block.shape[0], 0), dtype=np.float32)
        for chunk_start in range(0, vectors.shape[0], chunk_rows):
            chunk = np.asarray(vectors[chunk_start : chunk_start + chunk_rows])
            scores = _similarities(chunk, block)

            inside = (block_exclude >= chunk_start) & (block_exclude < chunk_start + chunk.shape[0])
            scores[np.flatnonzero(inside), block_exclude[inside] - chunk_start] = -np.inf

            columns = _top_k_columns(scores, k)
            best_rows = np.concatenate([best_rows, columns + chunk_start], axis=1)
            best_scores = np.concatenate([best_scores, np.take_along_axis(scores, columns, axis=1)], axis=1)
            best_rows, best_scores = _sort_by_score_then_row(best_rows, best_scores, k)
        all_rows[start : start + block.shape[0]] = best_rows
        all_scores[start : start + block.shape[0]] = best_scores
    return all_rows, all_scores


def _similarities(chunk: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Return the (M, C) float32 inner products of M query rows with C catalog rows."""
    if block.shape[0] < EINSUM_MAX_QUERIES:
        return np.stack([np.einsum("ij,j->i", chunk, query) for query in block])
    return np.ascontiguousarray((chunk @ block.T).T)


def _top_k_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """Return the columns of the k largest scores per row, lower columns first among ties at the cut.

    The returned columns are not sorted by score. Rows with fewer than k
    columns return all of them.
    """
    n_rows, n_columns = scores.shape
    if k >= n_columns:
        return np.broadcast_to(np.arange(n_columns), (n_rows, n_columns)).copy()
    columns = np.argpartition(scores, n_columns - k, axis=1)[:, n_columns - k :]

    # np.argpartition picks arbitrary members of a tie at the k-th score. Where more
    # columns than k reach that score, keep the lowest-indexed ones instead.
    cut = np.take_along_axis(scores, columns, axis=1).min(axis=1)
    reaching = (scores >= cut[:, None]).sum(axis=1)
    for row in np.flatnonzero(reaching > k):
        above = np.flatnonzero(scores[row] > cut[row])
        tied = np.flatnonzero(scores[row] == cut[row])
        columns[row] = np.concatenate([above, tied[: k - above.size]])
    return columns


def _sort_by_score_then_row(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((rows, -scores), axis=1)[:, :k]
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _drop_excluded(
    rows: np.ndarray, scores: np.ndarray, exclude_rows: np.ndarray, k: int, nprobe: int
) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query's excluded row from faiss results and keep the first k of the rest."""
    keep = (rows != exclude_rows[:, None]) & (rows >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    valid = np.take_along_axis(keep, order, axis=1)
    if not valid.all():
        query = int(np.flatnonzero(~valid.all(axis=1))[0])
        raise RuntimeError(
            f"the faiss index found fewer than k={k} neighbours for query {query}, because the "
            f"nprobe={nprobe} inverted lists it searched hold too few galaxies. Raise nprobe or use "
            "backend='exact'"
        )
    return np.take_along_axis(rows, order, axis=1).astype(np.int64), np.take_along_axis(scores, order, axis=1)


def _as_label_array(
    labels: Sequence[Any] | np.ndarray | None, count: int, class_names: Sequence[str] | None
) -> np.ndarray | None:
    if labels is None:
        if class_names is not None:
            raise ValueError("class_names needs labels: pass the integer label of each galaxy as labels")
        return None
    if isinstance(labels, pd.Series | pd.Index):
        labels = labels.to_numpy()
    array = np.asarray(labels)
    if array.dtype.kind == "O":
        array = np.asarray(array.tolist(), dtype=str)
    if array.shape != (count,):
        raise ValueError(f"labels must have shape ({count},), one label per galaxy, got shape {array.shape}")
    if array.dtype.kind not in "iuUb":
        raise TypeError(f"labels must be integers or strings, got dtype {array.dtype}")
    if class_names is None:
        return array
    if array.dtype.kind not in "iu":
        raise TypeError(f"with class_names, labels must be integer class indices, got dtype {array.dtype}")
    out_of_range = (array < 0) | (array >= len(class_names))
    if out_of_range.any():
        row = int(np.argmax(out_of_range))
        raise ValueError(
            f"labels row {row} is {array[row]}, outside 0..{len(class_names) - 1} for the "
            f"{len(class_names)} class_names. Pass the class names that the labels index"
        )
    return array.astype(np.int64)


def _unit_rows(embeddings: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Scale rows to unit length after checking each for NaN, inf and all zeros.

    The error names the row and its object id.
    """
    if not (np.issubdtype(embeddings.dtype, np.floating) or np.issubdtype(embeddings.dtype, np.integer)):
        raise TypeError(f"embeddings must contain real numbers, got dtype {embeddings.dtype}")
    for start in range(0, embeddings.shape[0], DEFAULT_CHUNK_ROWS):
        block = np.asarray(embeddings[start : start + DEFAULT_CHUNK_ROWS])
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise ValueError(
                f"embeddings row {row} (object id {ids[row].item()!r}) contains NaN or inf. "
                "Drop that galaxy from the index or embed its image again"
            )
        nonzero = (block != 0).any(axis=1)
        if not nonzero.all():
            row = start + int(np.argmin(nonzero))
            raise ValueError(
                f"embeddings row {row} (object id {ids[row].item()!r}) is all zeros, so it has no "
                "direction and no cosine similarity. Drop that galaxy from the index or embed its image again"
            )
    return normalize_rows(embeddings, "embeddings", dtype=np.float32)


def _unit_queries(vectors: np.ndarray, dim: int) -> np.ndarray:
    array = np.asarray(vectors)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(
            f"query vectors must have shape (dim,) or (n_queries, dim) with n_queries >= 1, got shape "
            f"{np.shape(vectors)}"
        )
    if array.shape[1] != dim:
        raise ValueError(
            f"query vectors have dimension {array.shape[1]} but the index contains {dim}-d embeddings. "
            "Embed the query with the model that produced the index"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"query vectors must contain real numbers, got dtype {array.dtype}")

    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"query vector {int(np.argmin(finite))} contains NaN or inf. Check the image, symbol or text "
            "that produced it"
        )
    nonzero = (array != 0).any(axis=1)
    if not nonzero.all():
        raise ValueError(
            f"query vector {int(np.argmin(nonzero))} is all zeros (zero length), so it has no cosine "
            "similarity. Check the image, symbol or text that produced it"
        )
    return normalize_rows(array, "query vectors", dtype=np.float32)


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _import_faiss() -> ModuleType | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _require_faiss(backend: str) -> ModuleType:
    faiss = _import_faiss()
    if faiss is None:
        raise ImportError(
            f"backend {backend!r} needs the faiss package, which is not installed. Install it with "
            "`pip install faiss-cpu`, or use backend='exact'"
        )
    return faiss


def _resolve_backend(backend: str, count: int, faiss_threshold: int) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        if backend.startswith("faiss"):
            _require_faiss(backend)
        return backend
    if count < faiss_threshold:
        return "exact"
    if _import_faiss() is None:
        logger.warning(
            "%d galaxies reach faiss_threshold=%d, but faiss is not installed, so search stays exact and "
            "slower. Install faiss-cpu for an IVF index",
            count,
            faiss_threshold,
        )
        return "exact"
    logger.info(
        "%d galaxies reach faiss_threshold=%d: using an approximate faiss IVF index. "
        "Check its recall with estimate_recall() or pass backend='exact'",
        count,
        faiss_threshold,
    )
    return "faiss-ivf"


def default_nlist(count: int) -> int:
    """Return the default number of IVF lists for ``count`` galaxies: about sqrt(count).

    faiss 1.15 prints a warning when k-means gets fewer than 39 training
    points per list, so small catalogs get fewer lists.
    """
    return max(1, min(round(np.sqrt(count)), count // 39))


def _build_ivf(vectors: np.ndarray, nlist: int | None, nprobe: int, seed: int) -> Any:
    """Train a faiss IndexIVFFlat (inner product) on a seeded sample of ``vectors`` and add them all."""
    faiss = _require_faiss("faiss-ivf")
    count, dim = vectors.shape
    nlist = default_nlist(count) if nlist is None else int(nlist)
    if nlist > count:
        raise ValueError(
            f"nlist={nlist} is larger than the {count} galaxies to cluster. Pass nlist <= {count}"
        )

    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    rng = np.random.default_rng(seed)
    sample_size = min(count, 64 * nlist)
    sample = np.sort(rng.choice(count, size=sample_size, replace=False))
    logger.info("training a faiss IVF index with %d lists on %d of %d galaxies", nlist, sample_size, count)
    ivf.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))

    # Adding in chunks bounds the contiguous float32 copy that faiss needs of memory-mapped vectors.
    ivf_add_chunk = 4 * DEFAULT_CHUNK_ROWS
    starts = range(0, count, ivf_add_chunk)
    for start in tqdm(starts, desc="adding to IVF index", unit="chunk", disable=len(starts) < 4, leave=False):
        ivf.add(np.ascontiguousarray(vectors[start : start + ivf_add_chunk], dtype=np.float32))
    ivf.nprobe = nprobe
    return ivf


def _read_index_manifest(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise FileNotFoundError(
            f"no neighbour index folder at {path}. "
            "Build one with NeighbourIndex(...) and write it with .save()"
        )
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ValueError(
            f"{path} is not a neighbour index folder: it has no {MANIFEST_NAME}. Pass the folder that "
            "NeighbourIndex.save() wrote"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{manifest_path} is not valid JSON ({error}). Save the index again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT:
        raise ValueError(
            f"{manifest_path} does not describe a neighbour index (format {INDEX_FORMAT!r} expected). "
            "Pass the folder that NeighbourIndex.save() wrote"
        )
    version = manifest.get("format_version")
    if version != INDEX_FORMAT_VERSION:
        raise ValueError(
            f"{manifest_path} has format version {version}, but this galaxalign reads version "
            f"{INDEX_FORMAT_VERSION}. Rebuild the index from the embeddings with this version"
        )
    for key in ("backend", "count", "dim"):
        if key not in manifest:
            raise ValueError(f"{manifest_path} is missing the key {key!r}. Save the index again")
    return manifest


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing, so the index folder is incomplete. Save the index again")
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _package_version() -> str | None:
    try:
        return metadata.version("galaxalign")
    except metadata.PackageNotFoundError:
        return None
