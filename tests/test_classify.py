"""Tests for galaxalign.classify: zero-shot scores and predictions from class embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from galaxalign.classify import zero_shot_predict, zero_shot_scores

# Class embeddings along +x, +y and -x. Image rows are (3, 4), (4, 3), (-3, 4) and (1, 1),
# whose unit vectors are (0.6, 0.8), (0.8, 0.6), (-0.6, 0.8) and (s, s) with s = 1/sqrt(2).
CLASS_EMBEDDINGS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
IMAGE_EMBEDDINGS = np.array([[3.0, 4.0], [4.0, 3.0], [-3.0, 4.0], [1.0, 1.0]])


def test_zero_shot_scores_hand_case() -> None:
    s = 1 / np.sqrt(2)
    expected = np.array(
        [
            [0.6, 0.8, -0.6],
            [0.8, 0.6, -0.8],
            [-0.6, 0.8, 0.6],
            [s, s, -s],
        ]
    )

    scores = zero_shot_scores(IMAGE_EMBEDDINGS, CLASS_EMBEDDINGS)

    assert scores.shape == (4, 3)
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_zero_shot_predict_hand_case() -> None:
    # Row 3, (1, 1), ties between +x and +y, and the lower class index (0) wins.
    predictions = zero_shot_predict(IMAGE_EMBEDDINGS, CLASS_EMBEDDINGS)

    assert predictions.dtype == np.int64
    assert predictions.tolist() == [1, 0, 1, 0]


def test_zero_shot_predict_ignores_vector_length() -> None:
    predictions = zero_shot_predict(
        IMAGE_EMBEDDINGS * 0.01, CLASS_EMBEDDINGS * np.array([[10.0], [0.5], [3.0]])
    )

    assert predictions.tolist() == [1, 0, 1, 0]


def test_zero_shot_rejects_dimension_mismatch() -> None:
    with pytest.raises(ValueError, match=r"shape \(4, 2\) and class_embeddings has shape \(3, 3\)"):
        zero_shot_scores(IMAGE_EMBEDDINGS, np.eye(3))


def test_zero_shot_rejects_nan_image_row() -> None:
    images = IMAGE_EMBEDDINGS.copy()
    images[1, 0] = np.nan
    with pytest.raises(ValueError, match="image_embeddings row 1 contains NaN or inf"):
        zero_shot_predict(images, CLASS_EMBEDDINGS)


def test_zero_shot_rejects_zero_class_row() -> None:
    classes = CLASS_EMBEDDINGS.copy()
    classes[0] = 0.0
    with pytest.raises(ValueError, match="class_embeddings row 0 is all zeros"):
        zero_shot_predict(IMAGE_EMBEDDINGS, classes)


def test_zero_shot_rejects_one_dimensional_class_embeddings() -> None:
    with pytest.raises(ValueError, match=r"class_embeddings has shape \(2,\)"):
        zero_shot_scores(IMAGE_EMBEDDINGS, np.array([1.0, 0.0]))
