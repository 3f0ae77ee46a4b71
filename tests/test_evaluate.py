from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from galaxalign import evaluate
from galaxalign.embed import EmbeddingSet
from galaxalign.evaluate import MethodResult


def embedding_set(
    images: np.ndarray, labels, text: np.ndarray, draws: np.ndarray | None = None, name: str = "test"
) -> EmbeddingSet:
    n_classes = text.shape[0]
    return EmbeddingSet(
        path=Path(name),
        ids=np.array([f"g{i}" for i in range(len(images))]),
        labels=np.asarray(labels, dtype=np.int64),
        images=np.asarray(images, dtype=np.float32),
        class_names=[f"class{i}" for i in range(n_classes)],
        text=np.asarray(text, dtype=np.float32),
        symbol_draws=None if draws is None else np.asarray(draws, dtype=np.float32),
        source={},
    )


def clustered(n_per_class: int, n_classes: int, dim: int, seed: int, spread: float = 0.8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    images = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    return images, labels, centres


def test_text_classifier_picks_nearest_prompt():
    images = np.array([[1.0, 0.1], [0.2, 1.0], [1.0, 0.9], [-1.0, 0.1]])
    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    results = evaluate.classify(embedding_set(images, [0, 1, 1, 0], text))
    text_result = results[0]
    assert text_result.method == "text"
    # Cosines to (1, 0) and (0, 1): row 2 is closer to class 0, row 3 scores -1 and 0.
    assert text_result.predictions.tolist() == [0, 1, 0, 1]
    assert text_result.metrics["accuracy"] == pytest.approx(0.5)


def test_combined_scores_average_text_and_symbol():
    images = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    text = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    draws = np.array([[[0.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]]])
    results = evaluate.classify(embedding_set(images, [0, 1], text, draws), symbol_draws=1)
    predictions = {r.method: r.predictions.tolist() for r in results}
    assert predictions["text"] == [0, 0]
    assert predictions["symbol"] == [0, 1]
    # Row 0: text (1, 0) + symbol (0, 0) -> class 0; row 1: text (0, 0) + symbol (0, 1) -> class 1.
    assert predictions["text + symbol"] == [0, 1]


def test_probe_and_knn_match_scikit_learn():
    images, labels, centres = clustered(30, 3, 8, seed=1, spread=1.5)
    test_images, test_labels, _ = clustered(10, 3, 8, seed=2, spread=1.5)
    test_images = centres[test_labels] + (test_images - centres[test_labels])
    train = embedding_set(images, labels, centres, name="train")
    results = evaluate.classify(embedding_set(test_images, test_labels, centres), train, knn_k=5)
    predictions = {r.method: r.predictions for r in results}

    unit_train = images / np.linalg.norm(images, axis=1, keepdims=True)
    unit_test = test_images / np.linalg.norm(test_images, axis=1, keepdims=True)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0))
    assert predictions["linear probe"].tolist() == probe.fit(unit_train, labels).predict(unit_test).tolist()
    knn = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute")
    assert predictions["kNN"].tolist() == knn.fit(images, labels).predict(test_images).tolist()


def test_symbol_seeds_change_drawings():
    rng = np.random.default_rng(0)
    images, labels, centres = clustered(20, 3, 6, seed=3, spread=2.0)
    draws = centres[:, None, :] + 2.0 * rng.normal(size=(3, 16, 6))
    results = evaluate.classify(
        embedding_set(images, labels, centres, draws), seeds=[0, 1, 2], symbol_draws=2
    )
    symbol_scores = [r.metrics["accuracy"] for r in results if r.method == "symbol"]
    text_scores = [r.metrics["accuracy"] for r in results if r.method == "text"]
    assert len(set(text_scores)) == 1
    assert len(set(symbol_scores)) > 1


def test_class_query_metrics_match_scikit_learn():
    images = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]])
    labels = np.array([0, 1, 0, 1, 1])
    classes = np.array([[1.0, 0.0], [0.0, 1.0]])
    scores = evaluate.class_query_metrics(images, labels, classes, k=2)

    expected_ap = [average_precision_score(labels == c, images @ classes[c]) for c in (0, 1)]
    assert scores["map"] == pytest.approx(np.mean(expected_ap))
    # Class 0 ranks rows 0, 1 first (relevant, not): AP@2 = 1 / min(2, 2) = 0.5.
    # Class 1 ranks rows 3, 2 (scores 1.0, 0.8; row 4 also 0.8 but row 2 comes first): 1 / 2.
    assert scores["map_at_2"] == pytest.approx(0.5)


def test_search_rows_by_query_kind():
    images, labels, centres = clustered(15, 3, 5, seed=4)
    draws = centres[:, None, :].repeat(4, axis=1)
    results = evaluate.search(embedding_set(images, labels, centres, draws), k=5, symbol_draws=4)
    assert [r.method for r in results] == ["image → image", "symbol → image", "text → image"]
    # Symbols identical to the prompts give identical search scores.
    assert results[1].metrics["map"] == pytest.approx(results[2].metrics["map"])


def test_summary_table_mean_and_std():
    results = [
        MethodResult("text", 0, {"accuracy": 0.5, "macro_f1": 0.2}),
        MethodResult("symbol", 0, {"accuracy": 0.6, "macro_f1": 0.3}),
        MethodResult("text", 1, {"accuracy": 0.7, "macro_f1": 0.4}),
    ]
    table = evaluate.classification_table(results)
    assert table.index.tolist() == ["text", "symbol"]
    assert table.loc["text", "accuracy_mean"] == pytest.approx(0.6)
    assert table.loc["text", "accuracy_std"] == pytest.approx(0.1)
    assert table.loc["symbol", "macro_f1_std"] == 0.0
    assert table.loc["text", "n_seeds"] == 2
    assert evaluate.format_mean_std(table).loc["text", "accuracy"] == "0.600 (0.100)"


def test_save_table_writes_csv_and_markdown(tmp_path: Path):
    table = pd.DataFrame(
        {"map_mean": [0.71234], "map_std": [0.0104], "n_seeds": [3]}, index=pd.Index(["kNN"], name="method")
    )
    csv_path, markdown_path = evaluate.save_table(table, tmp_path / "tables" / "search")
    assert pd.read_csv(csv_path, index_col="method").loc["kNN", "map_mean"] == pytest.approx(0.71234)
    lines = markdown_path.read_text().splitlines()
    assert lines[0].replace(" ", "") == "|method|map|"
    assert lines[2].replace(" ", "") == "|kNN|0.712(0.010)|"


def test_parse_seeds_accepts_text():
    assert evaluate.parse_seeds("0,1, 2") == [0, 1, 2]
    assert evaluate.parse_seeds("[3, 4]") == [3, 4]
    assert evaluate.parse_seeds(5) == [5]
    with pytest.raises(ValueError, match="seeds must be integers"):
        evaluate.parse_seeds("zero")
    with pytest.raises(ValueError, match="seeds is empty"):
        evaluate.parse_seeds([])


def test_classes_must_match_between_sets():
    images, labels, centres = clustered(5, 2, 3, seed=5)
    train = embedding_set(images, labels, centres, name="train")
    train.class_names = ["smooth", "featured"]
    with pytest.raises(ValueError, match="have the classes .*embed both with the same run"):
        evaluate.classify(embedding_set(images, labels, centres), train)


def test_nan_embedding_is_rejected():
    images, labels, centres = clustered(5, 2, 3, seed=6)
    images[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        evaluate.classify(embedding_set(images, labels, centres))


def test_knn_k_larger_than_train_set():
    images, labels, centres = clustered(3, 2, 3, seed=7)
    train = embedding_set(images, labels, centres, name="train")
    with pytest.raises(ValueError, match="knn_k must be between 1 and 6"):
        evaluate.classify(embedding_set(images, labels, centres), train, knn_k=7)
