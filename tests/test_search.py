"""Tests for galaxalign.search: exact and faiss neighbour search, ids, saving and input errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import NearestNeighbors

from galaxalign.data.demo import DEMO_DIR
from galaxalign.embed import EmbeddingSet
from galaxalign.object_ids import as_id_array
from galaxalign.search import NeighbourIndex, SearchResult, exact_top_k

N_GALAXIES = 300
DIM = 24


@pytest.fixture
def embeddings() -> np.ndarray:
    """Random embeddings in float64 and of varied lengths; their cosines have no near-ties."""
    rng = np.random.default_rng(7)
    return rng.standard_normal((N_GALAXIES, DIM)) * rng.uniform(0.5, 3.0, size=(N_GALAXIES, 1))


@pytest.fixture
def big_ids() -> np.ndarray:
    """int64 ids near 2**62, where a float64 cannot tell neighbouring integers apart."""
    return (2**62 + np.arange(N_GALAXIES) * 3).astype(np.int64)


def sklearn_neighbours(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and cosine similarities of the k nearest neighbours by scikit-learn's brute-force search."""
    search = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(embeddings)
    distances, rows = search.kneighbors(queries)
    return rows, 1.0 - distances


def tied_embeddings() -> np.ndarray:
    """Rows 0, 2 and 3 point along x, rows 1 and 4 along y, row 5 at 45 degrees between them."""
    return np.array([[1, 0], [0, 1], [2, 0], [1, 0], [0, 3], [1, 1]], dtype=np.float32)


# Exact search


def test_exact_batch_matches_sklearn(embeddings, big_ids):
    index = NeighbourIndex(embeddings, big_ids, backend="exact")
    result = index.search(embeddings[:20] + 0.1, k=7)
    rows, scores = sklearn_neighbours(embeddings, embeddings[:20] + 0.1, k=7)
    assert result.rows.tolist() == rows.tolist()
    assert result.scores == pytest.approx(scores, abs=1e-5)
    assert result.scores.dtype == np.float32


def test_exact_single_query_matches_sklearn(embeddings, big_ids):
    index = NeighbourIndex(embeddings, big_ids, backend="exact")
    result = index.search(embeddings[5] * 4.0, k=5)
    rows, scores = sklearn_neighbours(embeddings, embeddings[5:6], k=5)
    assert result.rows.tolist() == rows.tolist()
    assert result.scores == pytest.approx(scores, abs=1e-5)
    assert result.ids.tolist() == big_ids[rows].tolist()


def test_small_chunks_give_same_neighbours(embeddings, big_ids):
    whole = NeighbourIndex(embeddings, big_ids, backend="exact")
    chunked = NeighbourIndex(embeddings, big_ids, backend="exact", chunk_rows=7)
    for queries in (embeddings[:1], embeddings[:2], embeddings[:30]):
        assert chunked.search(queries, k=12).rows.tolist() == whole.search(queries, k=12).rows.tolist()


def test_k_equal_to_catalog_returns_every_row(embeddings, big_ids):
    index = NeighbourIndex(embeddings, big_ids, chunk_rows=64)
    result = index.search(embeddings[:4], k=N_GALAXIES)
    assert sorted(result.rows[0].tolist()) == list(range(N_GALAXIES))
    assert (np.diff(result.scores, axis=1) <= 0).all()


def test_ties_resolve_to_lower_row():
    for chunk_rows in (1, 2, 4, 100):
        index = NeighbourIndex(tied_embeddings(), [10, 11, 12, 13, 14, 15], chunk_rows=chunk_rows)
        single = index.search(np.array([5.0, 0.0]), k=4)
        batch = index.search(np.tile([5.0, 0.0], (6, 1)), k=4)
        assert single.rows[0].tolist() == [0, 2, 3, 5]
        assert batch.rows[5].tolist() == [0, 2, 3, 5]
        assert single.scores[0].tolist() == pytest.approx([1.0, 1.0, 1.0, np.sqrt(0.5)])


def test_exact_top_k_excludes_given_rows():
    vectors = tied_embeddings() / np.linalg.norm(tied_embeddings(), axis=1, keepdims=True)
    rows, scores = exact_top_k(vectors, vectors[[0, 1]], k=2, exclude_rows=np.array([0, -1]), chunk_rows=3)
    assert rows.tolist() == [[2, 3], [1, 4]]
    assert scores == pytest.approx(np.ones((2, 2)))


# Queries by object id


def test_query_ids_excludes_the_query_galaxy(embeddings, big_ids):
    index = NeighbourIndex(embeddings, big_ids)
    result = index.query_ids(big_ids[[3, 250]], k=5)
    rows, _ = sklearn_neighbours(embeddings, embeddings[[3, 250]], k=6)
    assert result.rows.tolist() == rows[:, 1:].tolist()
    assert result.query_ids.tolist() == big_ids[[3, 250]].tolist()


def test_query_ids_keeps_identical_twin():
    index = NeighbourIndex(tied_embeddings(), ["a", "b", "c", "d", "e", "f"])
    result = index.query_ids("c", k=3)
    assert result.ids[0].tolist() == ["a", "d", "f"]


def test_search_excludes_given_ids():
    index = NeighbourIndex(tied_embeddings(), ["a", "b", "c", "d", "e", "f"])
    result = index.search(np.array([[1.0, 0.0], [0.0, 1.0]]), k=2, exclude=["a", "e"])
    assert result.ids.tolist() == [["c", "d"], ["b", "f"]]


def test_string_index_accepts_integer_query():
    index = NeighbourIndex(tied_embeddings(), ["587722981742084144", "2", "3", "4", "5", "6"])
    assert index.rows_of(587722981742084144).tolist() == [0]
    assert 587722981742084144 in index


def test_integer_index_accepts_decimal_string():
    index = NeighbourIndex(tied_embeddings(), [587722981742084144, 2, 3, 4, 5, 6])
    assert index.rows_of(["587722981742084144", " 3 "]).tolist() == [0, 2]
    assert "not-an-id" not in index


def test_real_sdss_objids_stay_exact(tmp_path):
    catalog = pd.read_csv(DEMO_DIR / "catalog.csv", dtype={"objid": "int64"}).head(50)
    objids = catalog["objid"].to_numpy()
    vectors = np.random.default_rng(3).standard_normal((50, 8))
    NeighbourIndex(vectors, catalog["objid"], catalog["label"]).save(tmp_path / "gz1")
    loaded = NeighbourIndex.load(tmp_path / "gz1")
    assert loaded.ids.dtype == np.int64
    assert loaded.ids.tolist() == objids.tolist()
    assert loaded.query_ids(int(objids[17]), k=3).query_ids.tolist() == [int(objids[17])]


# Results as a table


def test_to_frame_lists_every_pair():
    index = NeighbourIndex(tied_embeddings(), [10, 11, 12, 13, 14, 15], labels=[0, 1, 0, 0, 1, 2])
    frame = index.query_ids([10, 14], k=2).to_frame()
    assert frame.columns.tolist() == [
        "query_id",
        "rank",
        "neighbour_id",
        "neighbour_row",
        "similarity",
        "label",
    ]
    assert frame["query_id"].tolist() == [10, 10, 14, 14]
    assert frame["rank"].tolist() == [1, 2, 1, 2]
    assert frame["neighbour_id"].tolist() == [12, 13, 11, 15]
    assert frame["label"].tolist() == [0, 0, 1, 2]
    assert frame["similarity"].tolist() == pytest.approx([1.0, 1.0, 1.0, np.sqrt(0.5)])


def test_to_frame_names_classes():
    index = NeighbourIndex(
        tied_embeddings(),
        list("abcdef"),
        labels=[0, 1, 0, 0, 1, 2],
        class_names=["smooth", "edge_on", "merger"],
    )
    frame = index.search(np.array([0.0, 1.0]), k=3).to_frame()
    assert frame["query_index"].tolist() == [0, 0, 0]
    assert frame["class_name"].tolist() == ["edge_on", "edge_on", "merger"]


def test_to_frame_keeps_int64_ids(big_ids, embeddings):
    frame = NeighbourIndex(embeddings, big_ids).query_ids(big_ids[0], k=2).to_frame()
    assert frame["neighbour_id"].dtype == np.int64
    assert frame["query_id"].tolist() == [int(big_ids[0])] * 2


def test_from_embedding_set_takes_names(tmp_path):
    embedding_set = EmbeddingSet(
        path=tmp_path,
        ids=np.array(["101", "102", "103", "104", "105", "106"]),
        labels=np.array([0, 1, 0, 0, 1, 2]),
        images=tied_embeddings(),
        class_names=["smooth", "edge_on", "merger"],
        text=np.eye(3, 2, dtype=np.float32),
        symbol_draws=None,
        source={},
    )
    result = NeighbourIndex.from_embedding_set(embedding_set).query_ids(101, k=1)
    assert result.ids.tolist() == [["103"]]
    assert result.to_frame()["class_name"].tolist() == ["smooth"]


# faiss backends


def test_faiss_flat_matches_exact(embeddings, big_ids):
    exact = NeighbourIndex(embeddings, big_ids, backend="exact").search(embeddings[:25], k=8)
    flat = NeighbourIndex(embeddings, big_ids, backend="faiss-flat").search(embeddings[:25], k=8)
    assert flat.rows.tolist() == exact.rows.tolist()
    assert flat.scores == pytest.approx(exact.scores, abs=1e-5)
    assert flat.exact


def test_faiss_flat_query_ids_match_exact(embeddings, big_ids):
    exact = NeighbourIndex(embeddings, big_ids, backend="exact").query_ids(big_ids[:25], k=8)
    flat = NeighbourIndex(embeddings, big_ids, backend="faiss-flat").query_ids(big_ids[:25], k=8)
    assert flat.rows.tolist() == exact.rows.tolist()


def test_ivf_probing_every_list_is_exact(embeddings, big_ids):
    index = NeighbourIndex(embeddings, big_ids, backend="faiss-ivf", nlist=4, nprobe=4)
    exact = NeighbourIndex(embeddings, big_ids, backend="exact")
    assert (
        index.query_ids(big_ids[:25], k=8).rows.tolist() == exact.query_ids(big_ids[:25], k=8).rows.tolist()
    )
    assert index.estimate_recall(k=8, n_queries=50) == 1.0
    assert not index.exact


def test_ivf_recall_drops_with_fewer_lists():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 32))
    index = NeighbourIndex(vectors, np.arange(2000), backend="faiss-ivf", nlist=40, nprobe=40)
    full = index.estimate_recall(k=10, n_queries=100)
    index.nprobe = 1
    assert full == 1.0
    assert index.estimate_recall(k=10, n_queries=100) < 0.5


def test_ivf_too_few_candidates_fails(embeddings, big_ids):
    index = NeighbourIndex(embeddings, big_ids, backend="faiss-ivf", nlist=5, nprobe=1)
    with pytest.raises(RuntimeError, match="fewer than k=250 neighbours .* Raise nprobe"):
        index.search(embeddings[:3], k=250)


def test_exact_index_recall_is_one(embeddings, big_ids):
    assert NeighbourIndex(embeddings, big_ids).estimate_recall(k=5) == 1.0


def test_vectors_of_returns_unit_rows(embeddings, big_ids):
    vectors = NeighbourIndex(embeddings, big_ids).vectors_of(big_ids[[4, 9]])
    expected = embeddings[[4, 9]] / np.linalg.norm(embeddings[[4, 9]], axis=1, keepdims=True)
    assert vectors.dtype == np.float32
    assert vectors == pytest.approx(expected, abs=1e-6)


def test_contains_checks_membership(embeddings, big_ids):
    index = NeighbourIndex(embeddings, big_ids)
    assert int(big_ids[7]) in index
    assert big_ids[7] in index
    assert 12345 not in index
    assert 1.5 not in index


def test_auto_switches_at_threshold(embeddings, big_ids):
    below = NeighbourIndex(embeddings, big_ids, faiss_threshold=N_GALAXIES + 1)
    at = NeighbourIndex(embeddings, big_ids, faiss_threshold=N_GALAXIES)
    assert below.backend == "exact"
    assert at.backend == "faiss-ivf"


def test_auto_without_faiss_stays_exact(monkeypatch, caplog, embeddings, big_ids):
    monkeypatch.setattr("galaxalign.search._import_faiss", lambda: None)
    with caplog.at_level(logging.WARNING, logger="galaxalign.search"):
        index = NeighbourIndex(embeddings, big_ids, faiss_threshold=10)
    assert index.backend == "exact"
    assert "faiss is not installed" in caplog.text


def test_faiss_backend_without_faiss_fails(monkeypatch, embeddings, big_ids):
    monkeypatch.setattr("galaxalign.search._import_faiss", lambda: None)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        NeighbourIndex(embeddings, big_ids, backend="faiss-flat")


# Saving and loading


def test_round_trip_with_int64_ids(tmp_path, embeddings, big_ids):
    index = NeighbourIndex(embeddings, big_ids, labels=np.arange(N_GALAXIES) % 4)
    index.save(tmp_path / "index")
    loaded = NeighbourIndex.load(tmp_path / "index")
    assert loaded.ids.dtype == np.int64
    assert loaded.ids.tolist() == big_ids.tolist()
    assert loaded.labels.tolist() == (np.arange(N_GALAXIES) % 4).tolist()
    assert isinstance(loaded.vectors, np.memmap)
    assert loaded.query_ids(big_ids[:5], k=6).rows.tolist() == index.query_ids(big_ids[:5], k=6).rows.tolist()


def test_round_trip_with_string_ids(tmp_path, embeddings):
    ids = np.array([f"J{row:04d}+0012" for row in range(N_GALAXIES)])
    index = NeighbourIndex(embeddings, ids)
    index.save(tmp_path / "index")
    loaded = NeighbourIndex.load(tmp_path / "index", mmap=False)
    assert loaded.ids.tolist() == ids.tolist()
    assert loaded.labels is None
    assert not isinstance(loaded.vectors, np.memmap)
    assert loaded.query_ids("J0042+0012", k=4).ids.tolist() == index.query_ids("J0042+0012", k=4).ids.tolist()


def test_round_trip_keeps_ivf_index(tmp_path, embeddings, big_ids):
    index = NeighbourIndex(embeddings, big_ids, backend="faiss-ivf", nlist=8, nprobe=2)
    index.save(tmp_path / "index")
    loaded = NeighbourIndex.load(tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "index.json").read_text())
    assert (tmp_path / "index" / "faiss_ivf.index").is_file()
    assert manifest["nlist"] == 8
    assert loaded.backend == "faiss-ivf"
    assert loaded.nprobe == 2
    assert (
        loaded.query_ids(big_ids[:40], k=5).rows.tolist() == index.query_ids(big_ids[:40], k=5).rows.tolist()
    )


def test_load_can_switch_backend(tmp_path, embeddings, big_ids):
    NeighbourIndex(embeddings, big_ids, backend="faiss-ivf", nlist=8, nprobe=1).save(tmp_path / "index")
    loaded = NeighbourIndex.load(tmp_path / "index", backend="exact")
    rows, _ = sklearn_neighbours(embeddings, embeddings[:10], k=4)
    assert loaded.backend == "exact"
    assert loaded.query_ids(big_ids[:10], k=3).rows.tolist() == rows[:, 1:].tolist()


def test_saved_ivf_opens_exact_without_faiss(tmp_path, monkeypatch, caplog, embeddings, big_ids):
    NeighbourIndex(embeddings, big_ids, backend="faiss-ivf", nlist=8).save(tmp_path / "index")
    monkeypatch.setattr("galaxalign.search._import_faiss", lambda: None)
    with caplog.at_level(logging.WARNING, logger="galaxalign.search"):
        loaded = NeighbourIndex.load(tmp_path / "index")
    assert loaded.backend == "exact"
    assert "opens as exact search" in caplog.text


def test_save_refuses_existing_path(tmp_path, embeddings, big_ids):
    index = NeighbourIndex(embeddings, big_ids)
    index.save(tmp_path / "index")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        index.save(tmp_path / "index")
    index.save(tmp_path / "index", overwrite=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["index"]


def test_overwrite_spares_other_folders(tmp_path, embeddings, big_ids):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "observing.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a neighbour index folder"):
        NeighbourIndex(embeddings, big_ids).save(tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "observing.txt").read_text() == "keep me"


def test_overwrite_spares_user_files_in_index(tmp_path, embeddings, big_ids):
    index = NeighbourIndex(embeddings, big_ids)
    index.save(tmp_path / "index")
    (tmp_path / "index" / "my_notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"files that the index did not write \(my_notes.txt\)"):
        index.save(tmp_path / "index", overwrite=True)
    assert (tmp_path / "index" / "my_notes.txt").read_text() == "keep me"


def test_load_missing_folder_fails(tmp_path):
    with pytest.raises(FileNotFoundError, match="no neighbour index folder"):
        NeighbourIndex.load(tmp_path / "nothing")


def test_load_other_folder_fails(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="is not a neighbour index folder: it has no index.json"):
        NeighbourIndex.load(tmp_path / "images")


def test_load_foreign_json_fails(tmp_path):
    (tmp_path / "index.json").write_text('{"format_version": 1}')
    with pytest.raises(ValueError, match="does not describe a neighbour index"):
        NeighbourIndex.load(tmp_path)


def test_load_without_vectors_fails(tmp_path, embeddings, big_ids):
    NeighbourIndex(embeddings, big_ids).save(tmp_path / "index")
    (tmp_path / "index" / "vectors.npy").unlink()
    with pytest.raises(FileNotFoundError, match="vectors.npy is missing"):
        NeighbourIndex.load(tmp_path / "index")


def test_load_mismatched_vectors_fails(tmp_path, embeddings, big_ids):
    NeighbourIndex(embeddings, big_ids).save(tmp_path / "index")
    np.save(tmp_path / "index" / "vectors.npy", np.ones((5, DIM), dtype=np.float32))
    with pytest.raises(ValueError, match=r"records float32 \(300, 24\)"):
        NeighbourIndex.load(tmp_path / "index")


# Bad input


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_row_names_id(bad_value, embeddings, big_ids):
    embeddings[42, 3] = bad_value
    with pytest.raises(ValueError, match=rf"row 42 \(object id {big_ids[42]}\) contains NaN or inf"):
        NeighbourIndex(embeddings, big_ids)


def test_zero_row_names_id(embeddings):
    embeddings[7] = 0.0
    ids = [f"id{row}" for row in range(N_GALAXIES)]
    ids[7] = "NGC 4565"
    with pytest.raises(ValueError, match=r"row 7 \(object id 'NGC 4565'\) is all zeros"):
        NeighbourIndex(embeddings, ids)


def test_empty_embeddings_rejected():
    with pytest.raises(ValueError, match=r"got shape \(0, 4\)"):
        NeighbourIndex(np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match=r"got shape \(3, 0\)"):
        NeighbourIndex(np.zeros((3, 0)), [1, 2, 3])


def test_duplicated_id_is_named(embeddings, big_ids):
    big_ids[200] = big_ids[10]
    with pytest.raises(
        ValueError, match=rf"object id {big_ids[10]} appears 2 times in ids \(rows \[10, 200\]\)"
    ):
        NeighbourIndex(embeddings, big_ids)


def test_id_count_must_match_rows(embeddings, big_ids):
    with pytest.raises(ValueError, match="ids has 299 entries but embeddings has 300 rows"):
        NeighbourIndex(embeddings, big_ids[:-1])


def test_float_ids_rejected(embeddings):
    with pytest.raises(TypeError, match="18-digit SDSS objids would change"):
        NeighbourIndex(embeddings, np.arange(N_GALAXIES, dtype=np.float64))


def test_mixed_ids_rejected():
    with pytest.raises(TypeError, match="must be all integers or all strings"):
        as_id_array([1, "2", 3])


def test_nan_query_rejected(embeddings, big_ids):
    queries = embeddings[:3].copy()
    queries[2, 0] = np.nan
    with pytest.raises(ValueError, match="query vector 2 contains NaN or inf"):
        NeighbourIndex(embeddings, big_ids).search(queries, k=3)


def test_zero_query_rejected(embeddings, big_ids):
    with pytest.raises(ValueError, match=r"query vector 0 is all zeros \(zero length\)"):
        NeighbourIndex(embeddings, big_ids).search(np.zeros(DIM), k=3)


def test_empty_query_rejected(embeddings, big_ids):
    with pytest.raises(ValueError, match=r"got shape \(0, 24\)"):
        NeighbourIndex(embeddings, big_ids).search(np.zeros((0, DIM)), k=3)


def test_wrong_query_dimension_rejected(embeddings, big_ids):
    with pytest.raises(ValueError, match="query vectors have dimension 0 but the index contains 24-d"):
        NeighbourIndex(embeddings, big_ids).search(np.zeros((1, 0)), k=3)


def test_k_above_catalog_rejected(embeddings, big_ids):
    index = NeighbourIndex(embeddings, big_ids)
    with pytest.raises(ValueError, match="k=301 is larger than the catalog: the index contains only 300"):
        index.search(embeddings[0], k=301)
    with pytest.raises(ValueError, match="only 299 others remain. Pass k <= 299"):
        index.query_ids(big_ids[0], k=300)


def test_k_below_one_rejected(embeddings, big_ids):
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        NeighbourIndex(embeddings, big_ids).search(embeddings[0], k=0)


def test_missing_query_id_is_listed(embeddings, big_ids):
    index = NeighbourIndex(embeddings, big_ids)
    with pytest.raises(KeyError, match=r"1 of 2 query ids are not in the index: \[12345\]"):
        index.query_ids([int(big_ids[1]), 12345], k=3)


def test_float_query_id_rejected(embeddings, big_ids):
    with pytest.raises(TypeError, match="query id 5.0 has type float"):
        NeighbourIndex(embeddings, big_ids).query_ids(5.0, k=3)


def test_result_length_counts_queries(embeddings, big_ids):
    result = NeighbourIndex(embeddings, big_ids).search(embeddings[:3], k=4)
    assert isinstance(result, SearchResult)
    assert len(result) == 3
    assert result.k == 4


def test_unknown_backend_rejected(embeddings, big_ids):
    with pytest.raises(ValueError, match="backend must be one of"):
        NeighbourIndex(embeddings, big_ids, backend="hnsw")


def test_class_names_need_valid_labels(embeddings, big_ids):
    with pytest.raises(ValueError, match="labels row 0 is 5, outside 0..2"):
        NeighbourIndex(embeddings, big_ids, labels=np.full(N_GALAXIES, 5), class_names=["a", "b", "c"])


def test_loaded_files_are_plain_npy(tmp_path, embeddings, big_ids):
    NeighbourIndex(embeddings, big_ids).save(tmp_path / "index")
    vectors = np.load(Path(tmp_path / "index" / "vectors.npy"), allow_pickle=False)
    assert vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(np.ones(N_GALAXIES), abs=1e-6)
