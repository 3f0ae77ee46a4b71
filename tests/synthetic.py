"""A synthetic exploration for widget tests: clustered embeddings and distinct thumbnails."""

import numpy as np

from galaxalign.explore import Exploration
from galaxalign.search import NeighbourIndex


def synthetic_exploration(count: int = 60, classes: int = 3, size: int = 8, seed: int = 0) -> Exploration:
    """Build ``count`` galaxies in ``classes`` clusters; the thumbnail of row i is filled with i % 256."""
    generator = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    centres = generator.normal(size=(classes, 16)) * 3
    vectors = (centres[labels] + generator.normal(size=(count, 16))).astype(np.float32)
    ids = np.array([f"G{i:04d}" for i in range(count)])
    names = [f"class_{label}" for label in range(classes)]
    pixels = np.stack([np.full((size, size, 3), i % 256, dtype=np.uint8) for i in range(count)])
    # Cache rows in reverse order, so a thumbnail read from the wrong row shows.
    pixel_rows = np.arange(count)[::-1].copy()
    pixels = pixels[pixel_rows]
    return Exploration(
        ids=ids,
        labels=labels.astype(np.int64),
        class_names=names,
        index=NeighbourIndex(vectors, ids, labels=labels, class_names=names),
        pixels=pixels,
        pixel_rows=pixel_rows,
        map_rows=np.arange(count),
        predicted=labels.astype(np.int64),
    )
