from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from galaxalign.data.demo import DEMO_DIR
from galaxalign.data.images import (
    ConcatImages,
    FileImages,
    H5Images,
    UnreadableImageError,
    center_crop,
    resize,
    to_rgb_uint8,
)


def test_grey_2d_is_replicated(galaxies):
    grey = galaxies[0][:, :, 1]
    rgb = to_rgb_uint8(grey)
    assert rgb.shape == (96, 96, 3)
    assert rgb.dtype == np.uint8
    for channel in range(3):
        assert np.array_equal(rgb[:, :, channel], grey)


def test_grey_with_channel_axis_is_replicated(galaxies):
    grey = galaxies[0][:, :, :1]
    rgb = to_rgb_uint8(grey)
    assert rgb.shape == (96, 96, 3)
    assert np.array_equal(rgb[:, :, 2], grey[:, :, 0])


def test_rgb_uint8_passes_unchanged(galaxies):
    galaxy = galaxies[1]
    assert np.array_equal(to_rgb_uint8(galaxy), galaxy)


def test_grey_alpha_composites_onto_black():
    pixels = np.array([[[200, 255], [200, 128], [200, 0], [255, 51]]], dtype=np.uint8)
    rgb = to_rgb_uint8(pixels)
    # 200 * 128 / 255 = 100.39 -> 100; 255 * 51 / 255 = 51.
    assert rgb[0, :, 0].tolist() == [200, 100, 0, 51]
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_rgba_composites_onto_black():
    pixels = np.array([[[10, 100, 250, 255], [10, 100, 250, 64]]], dtype=np.uint8)
    rgb = to_rgb_uint8(pixels)
    assert rgb[0, 0].tolist() == [10, 100, 250]
    # 10 * 64 / 255 = 2.51 -> 3; 100 * 64 / 255 = 25.1 -> 25; 250 * 64 / 255 = 62.75 -> 63.
    assert rgb[0, 1].tolist() == [3, 25, 63]


def test_uint16_scales_to_8_bits():
    pixels = np.array([[0, 128, 129, 385, 32896, 65535]], dtype=np.uint16)
    rgb = to_rgb_uint8(pixels)
    # value * 255 / 65535 = value / 257: 0.498 -> 0, 0.502 -> 1, 1.498 -> 1, 128.0 -> 128.
    assert rgb[0, :, 0].tolist() == [0, 0, 1, 1, 128, 255]


def test_float_in_unit_range_scales():
    pixels = np.array([[0.0, 0.5, 0.25, 1.0]], dtype=np.float32)
    assert to_rgb_uint8(pixels)[0, :, 1].tolist() == [0, 128, 64, 255]


def test_float_outside_unit_range_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\].*\[0.0, 255.0\]"):
        to_rgb_uint8(np.array([[0.0, 255.0]]))


def test_channels_first_rejected_with_hint():
    with pytest.raises(ValueError, match="channels first"):
        to_rgb_uint8(np.zeros((3, 8, 8), dtype=np.uint8))


def test_unsupported_dtype_rejected():
    with pytest.raises(ValueError, match="int32"):
        to_rgb_uint8(np.zeros((4, 4), dtype=np.int32))


def test_center_crop_keeps_central_region():
    image = np.arange(10 * 8).reshape(10, 8)
    crop = center_crop(image, 0.5)
    # 5 of 10 rows from row 2, 4 of 8 columns from column 2.
    assert np.array_equal(crop, image[2:7, 2:6])


def test_center_crop_of_sdss_cutout_size():
    cutout = np.zeros((423, 423, 3), dtype=np.uint8)
    assert center_crop(cutout, 212 / 423).shape == (212, 212, 3)


def test_center_crop_full_fraction_is_identity(galaxies):
    galaxy = galaxies[2]
    assert center_crop(galaxy, 1.0) is galaxy


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5, float("nan"), "half"])
def test_center_crop_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"fraction must be .*\(0, 1\]"):
        center_crop(np.zeros((4, 4, 3), dtype=np.uint8), fraction)


def test_resize_matches_pillow_lanczos(galaxies):
    galaxy = galaxies[3]
    expected = np.asarray(Image.fromarray(galaxy).resize((40, 40), Image.Resampling.LANCZOS))
    result = resize(galaxy, 40)
    assert result.shape == (40, 40, 3)
    assert result.dtype == np.uint8
    assert np.array_equal(result, expected)


def test_resize_keeps_flat_image_flat():
    flat = np.full((50, 50, 3), 77, dtype=np.uint8)
    assert np.all(resize(flat, 17) == 77)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_resize_rejects_bad_size(size):
    with pytest.raises(ValueError, match="size must be a positive integer"):
        resize(np.zeros((4, 4, 3), dtype=np.uint8), size)


def test_file_images_read_real_galaxy_formats(tmp_path: Path, galaxies):
    galaxy = galaxies[4]
    grey = galaxy[:, :, 0]
    alpha = np.tile(np.linspace(0, 255, 96).round().astype(np.uint8), (96, 1))
    deep = grey.astype(np.uint16) * 257 + 100

    Image.fromarray(galaxy).save(tmp_path / "colour.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([galaxy, alpha])).save(tmp_path / "rgba.png")
    Image.fromarray(deep).save(tmp_path / "deep.png")
    Image.fromarray(galaxy).save(tmp_path / "colour.tif")
    source = FileImages(
        [tmp_path / name for name in ("colour.png", "grey.png", "rgba.png", "deep.png", "colour.tif")]
    )

    with Image.open(tmp_path / "deep.png") as deep_png:
        assert deep_png.mode == "I;16"
    assert len(source) == 5
    assert np.array_equal(source.load(0), galaxy)
    assert np.array_equal(source.load(1), np.dstack([grey] * 3))
    composited = np.rint(galaxy * (alpha[:, :, None] / 255.0)).astype(np.uint8)
    assert np.array_equal(source.load(2), composited)
    # (257 * g + 100) / 257 rounds back to g because 100 / 257 < 0.5.
    assert np.array_equal(source.load(3), np.dstack([grey] * 3))
    assert np.array_equal(source.load(4), galaxy)
    assert source.describe(2) == str(tmp_path / "rgba.png")


def test_file_images_read_palette_bilevel_grey_alpha(tmp_path: Path, galaxies):
    galaxy = galaxies[5]
    Image.fromarray(galaxy).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(galaxy[:, :, 0] > 60).save(tmp_path / "mask.png")
    grey_alpha = np.dstack([galaxy[:, :, 1], np.full((96, 96), 128, dtype=np.uint8)])
    Image.fromarray(grey_alpha, mode="LA").save(tmp_path / "grey_alpha.png")
    source = FileImages([tmp_path / "palette.png", tmp_path / "mask.png", tmp_path / "grey_alpha.png"])

    with Image.open(tmp_path / "palette.png") as palette:
        expected = np.asarray(palette.convert("RGB"))
    assert np.array_equal(source.load(0), expected)
    assert set(np.unique(source.load(1)).tolist()) == {0, 255}
    assert np.array_equal(source.load(1)[:, :, 0] == 255, galaxy[:, :, 0] > 60)
    with Image.open(tmp_path / "grey_alpha.png") as grey_alpha_png:
        assert grey_alpha_png.mode == "LA"
    composited = np.rint(galaxy[:, :, 1] * (128 / 255)).astype(np.uint8)
    assert np.array_equal(source.load(2), np.dstack([composited] * 3))


def test_file_images_read_jpeg_as_pillow_does():
    path = sorted((DEMO_DIR / "images").glob("*.jpeg"))[6]
    with Image.open(path) as image:
        expected = np.asarray(image)
    assert np.array_equal(FileImages([path]).load(0), expected)


def test_unreadable_file_names_path_and_fix(tmp_path: Path):
    not_an_image = tmp_path / "notes.jpeg"
    not_an_image.write_text("this is not a JPEG")
    with pytest.raises(UnreadableImageError) as caught:
        FileImages([not_an_image]).load(0)
    message = str(caught.value)
    assert str(not_an_image) in message
    assert "skip_unreadable=True" in message
    assert "remove its row" in message
    assert caught.value.path == str(not_an_image)
    assert isinstance(caught.value, OSError)


def test_truncated_jpeg_is_unreadable(tmp_path: Path, galaxies):
    whole = tmp_path / "whole.jpeg"
    Image.fromarray(galaxies[7]).save(whole, quality=90)
    truncated = tmp_path / "truncated.jpeg"
    truncated.write_bytes(whole.read_bytes()[:600])
    with pytest.raises(UnreadableImageError, match="truncated.jpeg"):
        FileImages([truncated]).load(0)


def test_missing_file_is_unreadable(tmp_path: Path):
    with pytest.raises(UnreadableImageError, match=r"gone\.png: file not found"):
        FileImages([tmp_path / "gone.png"]).load(0)


def test_fingerprint_changes_with_file(tmp_path: Path, galaxies):
    path = tmp_path / "galaxy.png"
    Image.fromarray(galaxies[8]).save(path)
    source = FileImages([path, tmp_path / "absent.png"])
    first = source.fingerprint([0, 1])
    assert first[1] == [str(tmp_path / "absent.png"), -1, -1]
    Image.fromarray(galaxies[9]).save(path, compress_level=0)
    assert source.fingerprint([0, 1]) != first


def _write_h5(path: Path, images: np.ndarray) -> None:
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=images, chunks=(1, *images.shape[1:]))


def test_h5_images_open_lazily_and_read_one(tmp_path: Path, galaxies):
    galaxies = galaxies[:3]
    path = tmp_path / "galaxies.h5"
    _write_h5(path, galaxies)

    source = H5Images(path, "images")
    assert source._file is None
    assert np.array_equal(source.load(2), galaxies[2])
    assert len(source) == 3
    assert source.describe(1) == f"{path}:images[1]"
    with pytest.raises(IndexError, match="out of range .* 3 images"):
        source.load(3)
    source.close()


def test_h5_images_pickle_without_handle(tmp_path: Path, galaxies):
    galaxies = galaxies[:2]
    path = tmp_path / "galaxies.h5"
    _write_h5(path, galaxies)
    source = H5Images(path, "images")
    source.load(0)

    state = source.__getstate__()
    copy = pickle.loads(pickle.dumps(source))

    assert state["_file"] is None
    assert state["_dataset"] is None
    assert source._file is not None
    assert np.array_equal(copy.load(1), galaxies[1])
    source.close()
    copy.close()


def test_h5_images_convert_grey(tmp_path: Path, galaxies):
    grey = galaxies[:2, :, :, :1]
    path = tmp_path / "grey.h5"
    _write_h5(path, grey)
    source = H5Images(path, "images")
    assert np.array_equal(source.load(1), np.repeat(grey[1], 3, axis=2))
    source.close()


def test_concat_images_index_across_parts(tmp_path: Path, galaxies):
    galaxies = galaxies[:5]
    _write_h5(tmp_path / "a.h5", galaxies[:2])
    _write_h5(tmp_path / "b.h5", galaxies[2:])
    source = ConcatImages([H5Images(tmp_path / "a.h5", "images"), H5Images(tmp_path / "b.h5", "images")])

    assert len(source) == 5
    for index in range(5):
        assert np.array_equal(source.load(index), galaxies[index])
    assert source.describe(2) == f"{tmp_path / 'b.h5'}:images[0]"
    with pytest.raises(IndexError):
        source.load(5)
