"""Zero-shot classification: label each galaxy embedding with its most similar class embedding."""

from __future__ import annotations

import logging

import numpy as np

from galaxalign.metrics import normalize_rows

logger = logging.getLogger(__name__)


def zero_shot_scores(image_embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """Compute the cosine similarity of every image embedding to every class embedding.

    ``image_embeddings`` is (N, D) and ``class_embeddings`` is (C, D), for
    example the text embeddings of the class prompts or the symbol embeddings,
    one row per class in label order. Returns an (N, C) float32 array.
    Raises ``ValueError`` when D differs between the two, or when a row
    contains NaN or inf or is all zeros.
    """
    images = np.asarray(image_embeddings)
    classes = np.asarray(class_embeddings)
    if images.ndim != 2 or classes.ndim != 2 or images.shape[1] != classes.shape[1]:
        raise ValueError(
            f"image_embeddings has shape {images.shape} and class_embeddings has shape {classes.shape}, but "
            "both must be 2-D with the same embedding dimension (number of columns)"
        )
    if classes.shape[0] == 0:
        raise ValueError("class_embeddings has no rows. Pass one embedding per class")

    unit_images = normalize_rows(images, "image_embeddings", dtype=np.float32)
    unit_classes = normalize_rows(classes, "class_embeddings", dtype=np.float32)
    return unit_images @ unit_classes.T


def zero_shot_predict(image_embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """Predict a class index per image: the row of ``class_embeddings`` with the highest cosine similarity.

    Shapes and errors are those of :func:`zero_shot_scores`. Returns an (N,)
    int64 array. When two classes tie for the highest score, the lower class
    index wins.
    """
    scores = zero_shot_scores(image_embeddings, class_embeddings)
    return np.argmax(scores, axis=1).astype(np.int64)
