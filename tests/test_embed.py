import json
from pathlib import Path

import numpy as np
import pytest
import torch

from galaxalign.embed import (
    embed_pixels,
    embed_symbol_bank,
    load_embeddings,
    read_embedding_set,
    save_embeddings,
    write_embedding_set,
)
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


def colour_pixels(count: int) -> np.ndarray:
    """Images whose red channel encodes their position, so each embedding names its galaxy."""
    pixels = np.zeros((count, 4, 4, 3), dtype=np.uint8)
    pixels[..., 0] = (np.arange(count) * 10)[:, None, None]
    pixels[..., 2] = 255
    return pixels


def write_set(folder: Path, encode, rows: np.ndarray, source: dict | None = None, chunk_size: int = 3):
    return write_embedding_set(
        folder,
        encode,
        colour_pixels(12),
        rows,
        np.array([f"gal{r}" for r in rows]),
        rows % 2,
        IDENTITY,
        torch.device("cpu"),
        ["smooth", "featured"],
        text=np.eye(2, 3, dtype=np.float32),
        symbol_draws=np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3) + 1,
        source=source or {"checkpoint": "epoch_001.pt", "step": 7},
        chunk_size=chunk_size,
        batch_size=2,
    )


def test_embedding_set_matches_direct_embedding(tmp_path: Path):
    rows = np.array([9, 3, 0, 11, 4, 7, 1])
    written = write_set(tmp_path / "test", mean_colour, rows)
    expected = embed_pixels(mean_colour, colour_pixels(12), rows, IDENTITY, torch.device("cpu"))
    assert np.array_equal(np.asarray(written.images), expected)
    assert written.ids.tolist() == [f"gal{r}" for r in rows]
    assert written.labels.tolist() == [1, 1, 0, 1, 0, 1, 1]
    assert written.class_names == ["smooth", "featured"]
    assert not (tmp_path / "test" / "images.partial.npy").exists()
    reread = read_embedding_set(tmp_path / "test")
    assert isinstance(reread.images, np.memmap)
    assert np.array_equal(np.asarray(reread.images), expected)


def test_embedding_set_resumes_after_crash(tmp_path: Path):
    rows = np.arange(10)
    calls = []

    def crashing(pixels: torch.Tensor) -> torch.Tensor:
        calls.append(len(pixels))
        if len(calls) == 5:
            raise KeyboardInterrupt
        return mean_colour(pixels)

    # Chunks of 3 rows in batches of 2: calls 1-2 fill chunk one, 3-4 chunk two, call 5 dies.
    with pytest.raises(KeyboardInterrupt):
        write_set(tmp_path / "test", crashing, rows)
    manifest = json.loads((tmp_path / "test" / "manifest.json").read_text())
    assert manifest["rows_done"] == 6
    assert manifest["complete"] is False
    with pytest.raises(ValueError, match="incomplete .6 of 10 galaxies"):
        read_embedding_set(tmp_path / "test")

    resumed_calls = []

    def counting(pixels: torch.Tensor) -> torch.Tensor:
        resumed_calls.append(len(pixels))
        return mean_colour(pixels)

    finished = write_set(tmp_path / "test", counting, rows)
    assert sum(resumed_calls) == 4
    expected = embed_pixels(mean_colour, colour_pixels(12), rows, IDENTITY, torch.device("cpu"))
    assert np.array_equal(np.asarray(finished.images), expected)


def test_embedding_set_rebuilt_for_new_checkpoint(tmp_path: Path):
    rows = np.arange(4)
    write_set(tmp_path / "test", mean_colour, rows)

    def doubled(pixels: torch.Tensor) -> torch.Tensor:
        return 2 * mean_colour(pixels)

    reused = write_set(tmp_path / "test", doubled, rows)
    assert np.array_equal(np.asarray(reused.images)[:, 2], np.ones(4, dtype=np.float32))
    rebuilt = write_set(tmp_path / "test", doubled, rows, source={"checkpoint": "epoch_002.pt", "step": 9})
    assert np.array_equal(np.asarray(rebuilt.images)[:, 2], np.full(4, 2.0, dtype=np.float32))


def test_symbols_average_chosen_draws(tmp_path: Path):
    written = write_set(tmp_path / "test", mean_colour, np.arange(3))
    draws = written.symbol_draws
    everything = written.symbols()
    expected = draws[0].mean(axis=0) / np.linalg.norm(draws[0].mean(axis=0))
    assert everything[0].tolist() == pytest.approx(expected.tolist())
    one_each = written.symbols(draws=1, seed=3)
    for label in range(2):
        matches = [np.allclose(one_each[label], row / np.linalg.norm(row)) for row in draws[label]]
        assert sum(matches) == 1
    with pytest.raises(ValueError, match="draws must be between 1 and 4"):
        written.symbols(draws=5)


def test_read_embedding_set_missing_folder(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no embeddings in .*embed the split first"):
        read_embedding_set(tmp_path / "nothing")
