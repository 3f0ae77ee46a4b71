from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from galaxalign.data.cache import CachedImages, cache_images
from galaxalign.data.dataset import GalaxyDataset
from galaxalign.data.images import FileImages, UnreadableImageError, center_crop, resize
from galaxalign.schema import GZ1


class CountingImages:
    """Real galaxy pixels in memory that count how often an image is loaded."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self.loads = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> np.ndarray:
        with self._lock:
            self.loads += 1
        return self.images[index]

    def describe(self, index: int) -> str:
        return f"memory[{index}]"

    def fingerprint(self, indices) -> list[int]:
        return [int(i) for i in indices]


def _dataset(images, count: int | None = None) -> GalaxyDataset:
    count = len(images) if count is None else count
    return GalaxyDataset(
        images=images,
        labels=np.arange(count) % len(GZ1),
        ids=[f"g{i}" for i in range(count)],
        schema=GZ1,
        source="test galaxies",
    )


def test_second_call_decodes_nothing(tmp_path: Path, galaxies):
    source = CountingImages(galaxies[:5])
    dataset = _dataset(source)

    first = cache_images(dataset, size=32, crop_fraction=0.5, cache_dir=tmp_path)
    loads_after_first = source.loads
    second = cache_images(dataset, size=32, crop_fraction=0.5, cache_dir=tmp_path)

    assert loads_after_first == 5
    assert source.loads == 5
    assert isinstance(second, CachedImages)
    assert isinstance(second.array, np.memmap)
    assert second.path == first.path
    assert second.path.parent == tmp_path
    assert second.path.name.startswith("images-32px-")
    assert second.array.shape == (5, 32, 32, 3)
    assert second.kept.tolist() == [0, 1, 2, 3, 4]
    for index in range(5):
        expected = resize(center_crop(galaxies[index], 0.5), 32)
        assert np.array_equal(second.array[index], expected)


def test_cache_keeps_dataset_order_of_subset(tmp_path: Path, galaxies):
    dataset = _dataset(CountingImages(galaxies[:6])).subset([4, 1])
    cached = cache_images(dataset, size=16, cache_dir=tmp_path)
    assert np.array_equal(cached.array[0], resize(galaxies[4], 16))
    assert np.array_equal(cached.array[1], resize(galaxies[1], 16))


def test_new_size_or_crop_decodes_again(tmp_path: Path, galaxies):
    source = CountingImages(galaxies[:3])
    dataset = _dataset(source)
    paths = {
        cache_images(dataset, size=24, cache_dir=tmp_path).path,
        cache_images(dataset, size=16, cache_dir=tmp_path).path,
        cache_images(dataset, size=16, crop_fraction=0.75, cache_dir=tmp_path).path,
    }
    assert len(paths) == 3
    assert source.loads == 9


def test_many_images_decode_in_threads(tmp_path: Path, galaxies):
    many = np.concatenate([galaxies] * 6)  # 72 images, above the thread pool threshold
    source = CountingImages(many)
    cached = cache_images(_dataset(source), size=20, cache_dir=tmp_path)
    assert source.loads == 72
    assert np.array_equal(cached.array[71], resize(many[71], 20))
    assert np.array_equal(cached.array[13], resize(many[13], 20))


def _write_files(folder: Path, galaxies, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, name in enumerate(names):
        path = folder / name
        Image.fromarray(galaxies[index]).save(path)
        paths.append(path)
    return paths


def test_edited_image_file_decodes_again(tmp_path: Path, galaxies):
    paths = _write_files(tmp_path / "images", galaxies, ["a.png", "b.png"])
    dataset = _dataset(FileImages(paths))
    before = cache_images(dataset, size=16, cache_dir=tmp_path / "cache")

    Image.fromarray(galaxies[5]).save(paths[1])
    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after = cache_images(dataset, size=16, cache_dir=tmp_path / "cache")

    assert after.path != before.path
    assert np.array_equal(after.array[1], resize(galaxies[5], 16))


def test_unreadable_file_raises_naming_it(tmp_path: Path, galaxies):
    paths = _write_files(tmp_path / "images", galaxies, ["a.png", "b.png"])
    broken = tmp_path / "images" / "broken.jpeg"
    broken.write_text("not a JPEG")
    dataset = _dataset(FileImages([paths[0], broken, paths[1]]))

    with pytest.raises(UnreadableImageError) as caught:
        cache_images(dataset, size=16, cache_dir=tmp_path / "cache")

    assert str(broken) in str(caught.value)
    assert "skip_unreadable=True" in str(caught.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_skip_unreadable_leaves_image_out(tmp_path: Path, galaxies, caplog):
    paths = _write_files(tmp_path / "images", galaxies, ["a.png", "b.png"])
    broken = tmp_path / "images" / "broken.jpeg"
    broken.write_text("not a JPEG")
    dataset = _dataset(FileImages([paths[0], broken, paths[1]]))

    with caplog.at_level("WARNING", logger="galaxalign.data.cache"):
        cached = cache_images(dataset, size=16, cache_dir=tmp_path / "cache", skip_unreadable=True)

    assert cached.kept.tolist() == [0, 2]
    assert np.array_equal(cached.array[2], resize(galaxies[1], 16))
    assert not cached.array[1].any()
    assert "left out 1 of 3 images" in caplog.text
    assert "broken.jpeg" in caplog.text

    # The cache remembers the failure, so a strict call raises without decoding again.
    with pytest.raises(UnreadableImageError, match="broken.jpeg"):
        cache_images(dataset, size=16, cache_dir=tmp_path / "cache")


def test_cache_dir_from_environment(tmp_path: Path, galaxies, monkeypatch):
    monkeypatch.setenv("GALAXALIGN_CACHE", str(tmp_path / "env-cache"))
    cached = cache_images(_dataset(CountingImages(galaxies[:2])), size=8)
    assert cached.path.parent == tmp_path / "env-cache"


@pytest.mark.parametrize("fraction", [0.0, 1.2, -1])
def test_bad_crop_fraction_named(tmp_path: Path, galaxies, fraction):
    with pytest.raises(ValueError, match=r"crop_fraction must be in \(0, 1\]"):
        cache_images(
            _dataset(CountingImages(galaxies[:1])), size=8, crop_fraction=fraction, cache_dir=tmp_path
        )


@pytest.mark.parametrize("size", [0, 12.5, "224"])
def test_bad_size_named(tmp_path: Path, galaxies, size):
    with pytest.raises(ValueError, match="size must be a positive integer"):
        cache_images(_dataset(CountingImages(galaxies[:1])), size=size, cache_dir=tmp_path)


def test_truncated_cache_file_is_rebuilt(tmp_path: Path, galaxies, caplog):
    source = CountingImages(galaxies[:2])
    dataset = _dataset(source)
    path = cache_images(dataset, size=8, cache_dir=tmp_path).path
    path.write_bytes(path.read_bytes()[:200])

    with caplog.at_level("WARNING", logger="galaxalign.data.cache"):
        cached = cache_images(dataset, size=8, cache_dir=tmp_path)

    assert source.loads == 4
    assert np.array_equal(cached.array[1], resize(galaxies[1], 8))
    assert str(path) in caplog.text
