from pathlib import Path

import numpy as np
import pytest
import torch

from galaxalign.embed import embed_pixels, embed_symbol_bank, load_embeddings, save_embeddings
from galaxalign.models import ImageNormalization
from galaxalign.schema import GZ1

IDENTITY = ImageNormalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def mean_colour(pixels: torch.Tensor) -> torch.Tensor:
    """A stand-in image tower: the mean of each colour channel."""
    return pixels.mean(dim=(2, 3))


def test_embed_pixels_batches_in_order():
    pixels = np.zeros((5, 4, 4, 3), dtype=np.uint8)
    pixels[:, :, :, 0] = np.arange(5)[:, None, None] * 51
    features = embed_pixels(
        mean_colour, pixels, np.array([4, 0, 2]), IDENTITY, torch.device("cpu"), batch_size=2
    )
    assert features.dtype == np.float32
    assert features[:, 0].tolist() == pytest.approx([0.8, 0.0, 0.4])
    assert features[:, 1].tolist() == [0.0, 0.0, 0.0]


def test_embed_pixels_rejects_empty_split():
    with pytest.raises(ValueError, match="the split is empty"):
        embed_pixels(
            mean_colour, np.zeros((2, 4, 4, 3), np.uint8), np.array([], int), IDENTITY, torch.device("cpu")
        )


def test_symbol_embeddings_are_normalised_means():
    class Tower:
        def encode_symbol(self, pixels: torch.Tensor) -> torch.Tensor:
            return mean_colour(pixels)

    bank = np.zeros((2, 2, 4, 4, 3), dtype=np.uint8)
    bank[0, 0, ..., 0] = 255  # class 0: red, then green
    bank[0, 1, ..., 1] = 255
    bank[1, :, ..., 2] = 255  # class 1: blue twice
    embedded = embed_symbol_bank(Tower(), bank, IDENTITY, torch.device("cpu"))  # type: ignore[arg-type]
    assert embedded[0].tolist() == pytest.approx([2**-0.5, 2**-0.5, 0.0])
    assert embedded[1].tolist() == pytest.approx([0.0, 0.0, 1.0])


def test_embeddings_round_trip(tmp_path: Path):
    ids = np.array(["588848901537202306", "588848901532418163"])
    vectors = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    path = save_embeddings(
        tmp_path / "embeddings" / "test.npz",
        ids,
        np.array([0, 5]),
        vectors,
        GZ1,
        text_embeddings=np.eye(6, 2, dtype=np.float32),
    )
    loaded = load_embeddings(path)
    assert loaded["ids"].tolist() == ids.tolist()
    assert loaded["labels"].tolist() == [0, 5]
    assert np.array_equal(loaded["embeddings"], vectors)
    assert loaded["class_names"].tolist() == GZ1.names
    assert loaded["text_embeddings"].shape == (6, 2)
    assert "symbol_embeddings" not in loaded
    assert not list((tmp_path / "embeddings").glob("*.tmp*"))


def test_load_embeddings_missing_file_says_what_to_do(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no embeddings at .*run training"):
        load_embeddings(tmp_path / "test.npz")
