"""Tests for galaxalign.metrics: classification scores and similarity-search mAP."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

import galaxalign.metrics
from galaxalign.metrics import (
    average_precision_at_k,
    classification_metrics,
    normalize_rows,
    retrieval_metrics,
)


def reference_scores(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarities of all pairs in float64, computed without the library."""
    x = np.asarray(embeddings, dtype=np.float64)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit @ unit.T


def reference_map(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Mean over queries of scikit-learn's AP, each query ranking all other rows."""
    scores = reference_scores(embeddings)
    aps = []
    for query in range(len(labels)):
        others = np.arange(len(labels)) != query
        relevant = labels[others] == labels[query]
        if relevant.any():
            aps.append(average_precision_score(relevant, scores[query, others]))
    return float(np.mean(aps))


def reference_map_at_k(embeddings: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean AP@k with a stable ranking: descending score, lower row index first among ties."""
    scores = reference_scores(embeddings)
    aps = []
    for query in range(len(labels)):
        others = np.flatnonzero(np.arange(len(labels)) != query)
        relevant = labels[others] == labels[query]
        if relevant.any():
            order = np.argsort(-scores[query, others], kind="stable")
            aps.append(average_precision_at_k(relevant[order], k, int(relevant.sum())))
    return float(np.mean(aps))


def exact_tie_embeddings(rng: np.random.Generator, n_items: int) -> np.ndarray:
    """Integer embeddings whose cosine similarities are exact in float32, so equal scores really tie.

    Each row is an integer multiple of a vector with 1, 4 or 16 entries of +-1
    in 16 dimensions. Its unit vector then has entries +-1, +-0.5 or +-0.25,
    and every dot product is a short binary fraction that float32 and float64
    both hold exactly. Sparse rows use only the first 6 dimensions so that
    many pairs share a score, and the last rows repeat earlier rows.
    """
    rows = np.zeros((n_items, 16), dtype=np.int64)
    for i in range(n_items):
        n_nonzero = rng.choice([1, 4, 16])
        pool = 16 if n_nonzero == 16 else 6
        columns = rng.choice(pool, size=n_nonzero, replace=False)
        rows[i, columns] = rng.choice([-1, 1], size=n_nonzero) * rng.integers(1, 4)
    n_repeats = n_items // 5
    rows[-n_repeats:] = rows[rng.integers(0, n_items - n_repeats, size=n_repeats)]
    return rows


def test_map_matches_sklearn_on_random_embeddings() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=60)
    embeddings = rng.standard_normal((60, 8)).astype(np.float32)

    result = retrieval_metrics(embeddings, labels, k=5)

    assert result["map"] == pytest.approx(reference_map(embeddings, labels), abs=1e-9)
    assert result["map_at_5"] == pytest.approx(reference_map_at_k(embeddings, labels, 5), abs=1e-9)
    assert result["n_queries"] == 60
    assert result["n_skipped"] == 0


def test_map_matches_sklearn_with_exact_ties() -> None:
    rng = np.random.default_rng(1)
    embeddings = exact_tie_embeddings(rng, 80)
    labels = rng.integers(0, 3, size=80)

    # The test only means something if many scores tie within a ranking.
    first_row = np.delete(reference_scores(embeddings)[0], 0)
    assert np.unique(first_row).size < first_row.size // 3

    result = retrieval_metrics(embeddings, labels, k=5)

    assert result["map"] == pytest.approx(reference_map(embeddings, labels), abs=1e-9)


@pytest.mark.parametrize("k", [1, 3, 5, 200])
def test_map_at_k_breaks_ties_by_lower_index(k: int) -> None:
    rng = np.random.default_rng(2)
    embeddings = exact_tie_embeddings(rng, 50)
    labels = rng.integers(0, 3, size=50)

    result = retrieval_metrics(embeddings, labels, k=k)

    assert result[f"map_at_{k}"] == pytest.approx(reference_map_at_k(embeddings, labels, k), abs=1e-9)


def test_retrieval_hand_case_without_ties() -> None:
    # Five unit vectors at angles 0, 10, 25, 45 and 100 degrees, classes A B A B A.
    # Each query ranks the others by angular distance (smaller = more similar):
    #   q0 (A): 1(10) 2(25) 3(45) 4(100)  relevance 0 1 0 1  R=2
    #   q1 (B): 0(10) 2(15) 3(35) 4(90)   relevance 0 0 1 0  R=1
    #   q2 (A): 1(15) 3(20) 0(25) 4(75)   relevance 0 0 1 1  R=2
    #   q3 (B): 2(20) 1(35) 0(45) 4(55)   relevance 0 1 0 0  R=1
    #   q4 (A): 3(55) 2(75) 1(90) 0(100)  relevance 0 1 0 1  R=2
    # AP@3 = (1/min(3, R)) * sum of P@i at the relevant ranks i <= 3:
    #   q0 (1/2)/2 = 1/4, q1 (1/3)/1 = 1/3, q2 (1/3)/2 = 1/6, q3 (1/2)/1 = 1/2, q4 (1/2)/2 = 1/4
    #   mAP@3 = (3 + 4 + 2 + 6 + 3) / 12 / 5 = 0.3
    # AP over the whole ranking:
    #   q0 (1/2 + 2/4)/2 = 1/2, q1 1/3, q2 (1/3 + 2/4)/2 = 5/12, q3 1/2, q4 (1/2 + 2/4)/2 = 1/2
    #   mAP = (6 + 4 + 5 + 6 + 6) / 12 / 5 = 0.45
    angles = np.deg2rad([0.0, 10.0, 25.0, 45.0, 100.0])
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.array(["A", "B", "A", "B", "A"])

    result = retrieval_metrics(embeddings, labels, k=3)

    assert result["map_at_3"] == pytest.approx(0.3, abs=1e-12)
    assert result["map"] == pytest.approx(0.45, abs=1e-12)
    assert result["n_queries"] == 5
    assert result["n_skipped"] == 0


def test_retrieval_hand_case_tie_at_kth_place() -> None:
    # Rows: 0 (1, 0) class A, 1 (1, 1) class B, 2 (0, 1) class C, 3 (0, -1) class A.
    # Classes B and C have one member each, so rows 1 and 2 are skipped as queries.
    # q0 scores: row 1 0.707, rows 2 and 3 both exactly 0 (a tie).
    #   Stable ranking: 1, 2, 3 -> relevance 0 0 1. AP@2 = 0 because row 2 wins the tie for place 2.
    #   sklearn groups rows 2 and 3 into one threshold: AP = 1 * (1 relevant / 3 items) = 1/3.
    # q3 scores: row 0 0, row 1 -0.707, row 2 -1 -> relevance 1 0 0. AP@2 = 1, AP = 1.
    # mAP@2 = (0 + 1) / 2 = 0.5, mAP = (1/3 + 1) / 2 = 2/3.
    embeddings = np.array([[1, 0], [1, 1], [0, 1], [0, -1]])
    labels = np.array(["A", "B", "C", "A"])

    result = retrieval_metrics(embeddings, labels, k=2)

    assert result["map_at_2"] == pytest.approx(0.5, abs=1e-12)
    assert result["map"] == pytest.approx(2 / 3, abs=1e-12)
    assert result["n_queries"] == 2
    assert result["n_skipped"] == 2


def test_retrieval_excludes_query_itself(caplog: pytest.LogCaptureFixture) -> None:
    # Row 2 is the only class B galaxy: it is skipped, because its only match would be itself.
    # q0 (1, 0): row 2 (cos 0.995, B) ranks above row 1 (cos 0, A), so AP = 1/2.
    # q1 (0, 1): row 2 (cos 0.0995, B) ranks above row 0 (cos 0, A), so AP = 1/2.
    # Counting the query itself would put a relevant item first and raise both APs to 1.
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    labels = np.array([0, 0, 1])

    with caplog.at_level(logging.WARNING, logger="galaxalign.metrics"):
        result = retrieval_metrics(embeddings, labels, k=1)

    assert result["map"] == pytest.approx(0.5, abs=1e-12)
    assert result["map_at_1"] == pytest.approx(0.0, abs=1e-12)
    assert result["n_queries"] == 2
    assert result["n_skipped"] == 1
    assert "Skipped 1 of 3 galaxies" in caplog.text


def test_retrieval_without_any_shared_label_raises() -> None:
    with pytest.raises(ValueError, match="no galaxy shares its label"):
        retrieval_metrics(np.eye(3), np.array([0, 1, 2]))


def test_chunk_size_does_not_change_results() -> None:
    rng = np.random.default_rng(3)
    tied = exact_tie_embeddings(rng, 40)
    tied_labels = rng.integers(0, 3, size=40)
    random = rng.standard_normal((41, 6))
    random_labels = np.append(rng.integers(0, 3, size=40), 7)

    for embeddings, labels in [(tied, tied_labels), (random, random_labels)]:
        small = retrieval_metrics(embeddings, labels, k=4, chunk_size=3)
        large = retrieval_metrics(embeddings, labels, k=4, chunk_size=10_000)
        assert small["map"] == pytest.approx(large["map"], abs=1e-12)
        assert small["map_at_4"] == pytest.approx(large["map_at_4"], abs=1e-12)
        assert small["n_queries"] == large["n_queries"]
        assert small["n_skipped"] == large["n_skipped"]


def reference_per_query(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """scikit-learn's AP of each row as a query, NaN where no other row shares its label."""
    scores = reference_scores(embeddings)
    aps = np.full(len(labels), np.nan)
    for query in range(len(labels)):
        others = np.arange(len(labels)) != query
        relevant = labels[others] == labels[query]
        if relevant.any():
            aps[query] = average_precision_score(relevant, scores[query, others])
    return aps


@pytest.mark.parametrize("chunk_size", [1, 7, 10, 96])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_heavy_ties_with_uneven_chunks(chunk_size: int, n_threads: int) -> None:
    # None of the chunk sizes divides the 97 rows, and class 4 has a single member.
    rng = np.random.default_rng(5)
    embeddings = exact_tie_embeddings(rng, 97)
    labels = rng.integers(0, 4, size=97)
    labels[50] = 4

    result = retrieval_metrics(embeddings, labels, k=6, chunk_size=chunk_size, n_threads=n_threads)

    assert result["map"] == pytest.approx(reference_map(embeddings, labels), abs=1e-12)
    assert result["map_at_6"] == pytest.approx(reference_map_at_k(embeddings, labels, 6), abs=1e-12)
    assert result["n_queries"] == 96
    assert result["n_skipped"] == 1


def test_per_query_ap_matches_sklearn() -> None:
    rng = np.random.default_rng(6)
    embeddings = exact_tie_embeddings(rng, 70)
    labels = np.array(["smooth", "spiral", "edge_on"])[rng.integers(0, 3, size=70)]
    labels[[3, 40]] = ["merger", "dont_know"]

    result = retrieval_metrics(embeddings, labels, k=4, chunk_size=9, per_query=True)

    expected = reference_per_query(embeddings, labels)
    np.testing.assert_allclose(result["ap"], expected, rtol=0, atol=1e-12)
    assert np.isnan(result["ap"][[3, 40]]).all()
    assert np.isnan(result["ap_at_4"][[3, 40]]).all()
    assert np.nanmean(result["ap"]) == pytest.approx(result["map"], abs=1e-12)
    assert np.nanmean(result["ap_at_4"]) == pytest.approx(result["map_at_4"], abs=1e-12)


def test_per_query_ap_at_k_hand_case() -> None:
    # The hand case of test_retrieval_hand_case_without_ties, query by query:
    # AP@3 = 1/4, 1/3, 1/6, 1/2, 1/4 and AP = 1/2, 1/3, 5/12, 1/2, 1/2.
    angles = np.deg2rad([0.0, 10.0, 25.0, 45.0, 100.0])
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.array(["A", "B", "A", "B", "A"])

    result = retrieval_metrics(embeddings, labels, k=3, per_query=True)

    np.testing.assert_allclose(result["ap_at_3"], [1 / 4, 1 / 3, 1 / 6, 1 / 2, 1 / 4], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["ap"], [1 / 2, 1 / 3, 5 / 12, 1 / 2, 1 / 2], rtol=0, atol=1e-12)


def test_small_sort_blocks_keep_values(monkeypatch: pytest.MonkeyPatch) -> None:
    # Sort blocks of 2 or 3 rows split every class into several blocks per chunk.
    monkeypatch.setattr(galaxalign.metrics, "_SUBBLOCK_SCORES", 150)
    rng = np.random.default_rng(7)
    embeddings = exact_tie_embeddings(rng, 60)
    labels = rng.integers(0, 3, size=60)

    result = retrieval_metrics(embeddings, labels, k=5, chunk_size=25, n_threads=2)

    assert result["map"] == pytest.approx(reference_map(embeddings, labels), abs=1e-12)
    assert result["map_at_5"] == pytest.approx(reference_map_at_k(embeddings, labels, 5), abs=1e-12)


def test_map_matches_sklearn_with_many_classes() -> None:
    # 30 classes of about 4 members: many class runs per chunk, and ties from the repeated rows.
    rng = np.random.default_rng(8)
    embeddings = exact_tie_embeddings(rng, 120)
    labels = rng.permutation(np.arange(120) % 30)

    result = retrieval_metrics(embeddings, labels, k=3, chunk_size=50)

    assert result["map"] == pytest.approx(reference_map(embeddings, labels), abs=1e-12)
    assert result["map_at_3"] == pytest.approx(reference_map_at_k(embeddings, labels, 3), abs=1e-12)


def test_retrieval_rejects_nan_row() -> None:
    embeddings = np.ones((5, 3))
    embeddings[3, 1] = np.nan
    with pytest.raises(ValueError, match="embeddings row 3 contains NaN or inf"):
        retrieval_metrics(embeddings, np.zeros(5, dtype=int))


def test_retrieval_rejects_inf_row() -> None:
    embeddings = np.ones((5, 3))
    embeddings[4, 0] = np.inf
    with pytest.raises(ValueError, match="embeddings row 4 contains NaN or inf"):
        retrieval_metrics(embeddings, np.zeros(5, dtype=int))


def test_retrieval_rejects_zero_row() -> None:
    embeddings = np.ones((5, 3))
    embeddings[2] = 0.0
    with pytest.raises(ValueError, match="embeddings row 2 is all zeros"):
        retrieval_metrics(embeddings, np.zeros(5, dtype=int))


def test_retrieval_rejects_label_count_mismatch() -> None:
    with pytest.raises(
        ValueError, match=r"labels must be a 1-D array with one label per embedding row \(5\)"
    ):
        retrieval_metrics(np.ones((5, 3)), np.zeros(4, dtype=int))


def test_retrieval_rejects_one_dimensional_embeddings() -> None:
    with pytest.raises(ValueError, match=r"embeddings must be a 2-D array .* got shape \(5,\)"):
        retrieval_metrics(np.ones(5), np.zeros(5, dtype=int))


@pytest.mark.parametrize("k", [0, -2])
def test_retrieval_rejects_k_below_one(k: int) -> None:
    with pytest.raises(ValueError, match=f"k must be >= 1, got {k}"):
        retrieval_metrics(np.eye(4), np.zeros(4, dtype=int), k=k)


def test_retrieval_rejects_chunk_size_below_one() -> None:
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        retrieval_metrics(np.eye(4), np.zeros(4, dtype=int), chunk_size=0)


def test_retrieval_rejects_zero_threads() -> None:
    with pytest.raises(ValueError, match="n_threads must be >= 1, got 0"):
        retrieval_metrics(np.eye(4), np.zeros(4, dtype=int), n_threads=0)


def test_average_precision_at_k_hand_case() -> None:
    # Relevance 0 1 1 0 1 with 4 relevant items in the collection, k = 3:
    # P@2 = 1/2 and P@3 = 2/3 at the relevant ranks, so AP@3 = (1/2 + 2/3) / min(3, 4) = 7/18.
    assert average_precision_at_k(np.array([0, 1, 1, 0, 1]), k=3, n_relevant=4) == pytest.approx(7 / 18)


def test_average_precision_at_k_short_list() -> None:
    # One relevant item at rank 1, 2 relevant in the collection, k = 5: AP@5 = 1 / min(5, 2) = 1/2.
    assert average_precision_at_k(np.array([True]), k=5, n_relevant=2) == pytest.approx(0.5)


def test_average_precision_at_k_rejects_too_many_hits() -> None:
    with pytest.raises(ValueError, match="more than n_relevant = 1"):
        average_precision_at_k(np.array([1, 1, 0]), k=3, n_relevant=1)


def test_normalize_rows_handles_huge_values() -> None:
    unit = normalize_rows(np.array([[3e200, 4e200], [-3e-200, 0.0]]), dtype=np.float64)

    np.testing.assert_allclose(unit, [[0.6, 0.8], [-1.0, 0.0]], rtol=1e-15)


def test_classification_metrics_hand_case() -> None:
    # Classes: 0 smooth, 1 spiral, 2 edge_on (never predicted), 3 merger (absent from both).
    # true 0 0 1 1 2 2
    # pred 0 1 1 1 0 1
    # smooth:  tp 1, fp 1, fn 1 -> precision 1/2, recall 1/2, f1 1/2
    # spiral:  tp 2, fp 2, fn 0 -> precision 1/2, recall 1,   f1 2/3
    # edge_on: tp 0, fp 0, fn 2 -> precision 0 (no predictions), recall 0, f1 0
    # merger:  no support and no predictions -> all 0, still counted in the macro mean
    # accuracy 3/6 = 1/2, macro F1 = (1/2 + 2/3 + 0 + 0) / 4 = 7/24
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 1])
    names = ["smooth", "spiral", "edge_on", "merger"]

    result = classification_metrics(y_true, y_pred, names)

    assert result["accuracy"] == pytest.approx(0.5)
    assert result["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert result["macro_f1"] == pytest.approx(7 / 24)
    sklearn_macro_f1 = f1_score(y_true, y_pred, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    assert result["macro_f1"] == pytest.approx(sklearn_macro_f1)
    assert result["per_class"]["smooth"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert result["per_class"]["spiral"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 2}
    )
    assert result["per_class"]["edge_on"] == pytest.approx(
        {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    )
    assert result["per_class"]["merger"] == pytest.approx(
        {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    )
    assert result["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]


def test_classification_metrics_rejects_label_outside_classes() -> None:
    with pytest.raises(ValueError, match=r"y_pred\[2\] = 5 is not a class index in \[0, 3\)"):
        classification_metrics([0, 1, 2], [0, 1, 5], ["a", "b", "c"])


def test_classification_metrics_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="y_true has 3 labels but y_pred has 2"):
        classification_metrics([0, 1, 2], [0, 1], ["a", "b", "c"])


def test_classification_metrics_rejects_repeated_class_name() -> None:
    with pytest.raises(ValueError, match=r"these repeat: \['a'\]"):
        classification_metrics([0, 1], [0, 1], ["a", "b", "a"])
