"""Tests of the procedural symbols, user symbol images, symbol banks and symbol sheets."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from galaxalign.schema import GALAXY10_DECALS, GZ1, ClassSchema, MorphologyClass
from galaxalign.symbols import (
    SPIRAL_PITCH_DEGREES,
    SYMBOL_RECIPES,
    SymbolBank,
    draw_symbol,
    load_symbol_image,
    save_symbol_sheet,
    symbol_sheet,
)

ALL_RECIPES = sorted(SYMBOL_RECIPES)


def brightness_centroid(image: np.ndarray) -> tuple[float, float]:
    """Return the (x, y) brightness centroid in pixels, with x to the right and y downward."""
    grey = image[:, :, 0].astype(np.float64)
    rows, columns = np.mgrid[0 : grey.shape[0], 0 : grey.shape[1]]
    total = grey.sum()
    return float((columns * grey).sum() / total), float((rows * grey).sum() / total)


def axis_ratio(image: np.ndarray) -> float:
    """Return the minor-to-major axis ratio from the second moments of the brightness."""
    grey = image[:, :, 0].astype(np.float64)
    rows, columns = np.mgrid[0 : grey.shape[0], 0 : grey.shape[1]]
    x_mean, y_mean = brightness_centroid(image)
    dx, dy = columns - x_mean, rows - y_mean
    total = grey.sum()
    covariance = (
        np.array(
            [
                [(grey * dx * dx).sum(), (grey * dx * dy).sum()],
                [(grey * dx * dy).sum(), (grey * dy * dy).sum()],
            ]
        )
        / total
    )
    smaller, larger = np.linalg.eigvalsh(covariance)
    return math.sqrt(smaller / larger)


def arm_winding_slope(image: np.ndarray, inner: float = 0.35, outer: float = 0.72) -> float:
    """Measure how the arm angle changes with radius in a two-arm spiral drawing.

    In each thin annulus (radii as fractions of half the image width) the
    bright arm pixels lie at angles phi and phi + pi, where phi is
    ``atan2(y, x)`` with y downward, so the angle increases clockwise on the
    displayed image. The mean of exp(2i phi) gives 2 phi per annulus. The
    slope of the unwrapped 2 phi against ln(radius) is returned. For a
    logarithmic spiral with pitch angle p it is -2 / tan(p) when the arms turn
    clockwise going inward (Z-wise), and +2 / tan(p) for S-wise arms.
    """
    grey = image[:, :, 0].astype(np.float64)
    size = grey.shape[0]
    center = (size - 1) / 2
    rows, columns = np.mgrid[0:size, 0:size]
    dx, dy = columns - center, rows - center
    radius = np.hypot(dx, dy) / (size / 2)
    doubled = np.exp(2j * np.arctan2(dy, dx))

    edges = np.linspace(inner, outer, 13)
    radii, angles = [], []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        arm = (radius >= low) & (radius < high) & (grey > 100)
        assert arm.sum() > 0, f"no arm pixels between radius {low:.2f} and {high:.2f}"
        angles.append(np.angle((grey[arm] * doubled[arm]).sum()))
        radii.append((low + high) / 2)
    slope, _ = np.polyfit(np.log(radii), np.unwrap(angles), 1)
    return float(slope)


def pitch_from_slope(slope: float) -> float:
    return math.degrees(math.atan(2 / abs(slope)))


@pytest.mark.parametrize("recipe", ALL_RECIPES)
def test_recipe_canonical_draw_is_centred_symbol(recipe: str) -> None:
    image = draw_symbol(recipe, 64)
    x, y = brightness_centroid(image)

    assert image.shape == (64, 64, 3)
    assert image.dtype == np.uint8
    assert image.max() >= 200
    assert (image[:, :, 0] > 60).mean() > 0.02
    assert np.array_equal(image[:, :, 0], image[:, :, 1])
    assert np.array_equal(image[:, :, 0], image[:, :, 2])
    assert image[0, 0].tolist() == [0, 0, 0]
    assert image[-1, -1].tolist() == [0, 0, 0]
    assert abs(x - 31.5) < 2.5
    assert abs(y - 31.5) < 2.5


@pytest.mark.parametrize("recipe", ALL_RECIPES)
def test_recipe_jittered_draws_stay_centred_and_inside(recipe: str) -> None:
    for seed in range(4):
        image = draw_symbol(recipe, 64, np.random.default_rng(seed))
        x, y = brightness_centroid(image)
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])

        assert image.shape == (64, 64, 3)
        assert image.dtype == np.uint8
        assert image.max() >= 200
        assert abs(x - 31.5) < 4.0
        assert abs(y - 31.5) < 4.0
        assert border.max() < 40


@pytest.mark.parametrize("recipe", ALL_RECIPES)
def test_recipe_draws_reproducible_per_seed(recipe: str) -> None:
    canonical_first = draw_symbol(recipe, 48)
    canonical_second = draw_symbol(recipe, 48)
    seeded_first = draw_symbol(recipe, 48, np.random.default_rng(7))
    seeded_second = draw_symbol(recipe, 48, np.random.default_rng(7))
    other_seed = draw_symbol(recipe, 48, np.random.default_rng(8))

    assert np.array_equal(canonical_first, canonical_second)
    assert np.array_equal(seeded_first, seeded_second)
    assert not np.array_equal(seeded_first, other_seed)
    assert not np.array_equal(seeded_first, canonical_first)


def test_anticlockwise_mirrors_clockwise_exactly() -> None:
    canonical_clockwise = draw_symbol("spiral_clockwise", 64)
    canonical_anticlockwise = draw_symbol("spiral_anticlockwise", 64)

    assert np.array_equal(np.fliplr(canonical_clockwise), canonical_anticlockwise)
    assert not np.array_equal(canonical_clockwise, canonical_anticlockwise)
    for seed in (0, 1, 12345):
        clockwise = draw_symbol("spiral_clockwise", 64, np.random.default_rng(seed))
        anticlockwise = draw_symbol("spiral_anticlockwise", 64, np.random.default_rng(seed))
        assert np.array_equal(np.fliplr(clockwise), anticlockwise)


def test_clockwise_arms_turn_clockwise_inward() -> None:
    # Z-wise: followed inward, the arm angle atan2(y, x) with y downward grows,
    # so it falls with radius at -2 / tan(22 degrees) = -4.95 per unit of ln(radius).
    slope = arm_winding_slope(draw_symbol("spiral_clockwise", 128))
    measured_pitch = pitch_from_slope(slope)

    assert slope < 0
    assert abs(measured_pitch - SPIRAL_PITCH_DEGREES["medium"]) < 4.0


def test_anticlockwise_arms_turn_anticlockwise_inward() -> None:
    slope = arm_winding_slope(draw_symbol("spiral_anticlockwise", 128))

    assert slope > 0
    assert abs(pitch_from_slope(slope) - SPIRAL_PITCH_DEGREES["medium"]) < 4.0


def test_jittered_clockwise_keeps_handedness() -> None:
    for seed in range(5):
        clockwise = draw_symbol("spiral_clockwise", 128, np.random.default_rng(seed))
        anticlockwise = draw_symbol("spiral_anticlockwise", 128, np.random.default_rng(seed))
        assert arm_winding_slope(clockwise) < 0, f"seed {seed}"
        assert arm_winding_slope(anticlockwise) > 0, f"seed {seed}"


def test_generic_spirals_take_both_windings() -> None:
    for recipe in ("spiral", "tight_spiral", "loose_spiral"):
        signs = {
            np.sign(arm_winding_slope(draw_symbol(recipe, 128, np.random.default_rng(seed))))
            for seed in range(12)
        }
        assert signs == {-1.0, 1.0}, recipe


def test_tight_spiral_pitch_smaller_than_loose() -> None:
    tight = pitch_from_slope(arm_winding_slope(draw_symbol("tight_spiral", 128)))
    medium = pitch_from_slope(arm_winding_slope(draw_symbol("spiral", 128)))
    loose = pitch_from_slope(arm_winding_slope(draw_symbol("loose_spiral", 128)))

    assert tight < medium
    assert medium < loose
    assert abs(tight - SPIRAL_PITCH_DEGREES["tight"]) < 4.0
    assert abs(loose - SPIRAL_PITCH_DEGREES["loose"]) < 6.0


def test_smooth_shapes_axis_ratios() -> None:
    round_ratio = axis_ratio(draw_symbol("smooth_round", 128))
    in_between_ratio = axis_ratio(draw_symbol("in_between_round", 128))
    cigar_ratio = axis_ratio(draw_symbol("cigar", 128))
    edge_on_ratio = axis_ratio(draw_symbol("edge_on_no_bulge", 128))

    assert abs(round_ratio - 1.0) < 0.02
    assert abs(in_between_ratio - 0.7) < 0.04
    assert abs(cigar_ratio - 0.3) < 0.04
    assert abs(edge_on_ratio - 0.1) < 0.04
    assert cigar_ratio < in_between_ratio
    assert in_between_ratio < round_ratio
    assert edge_on_ratio < cigar_ratio


def test_axis_ratios_survive_jitter() -> None:
    for seed in range(5):
        in_between = axis_ratio(draw_symbol("in_between_round", 128, np.random.default_rng(seed)))
        cigar = axis_ratio(draw_symbol("cigar", 128, np.random.default_rng(seed)))
        edge_on = axis_ratio(draw_symbol("edge_on_no_bulge", 128, np.random.default_rng(seed)))
        assert abs(in_between - 0.7) < 0.05, f"seed {seed}"
        assert abs(cigar - 0.3) < 0.05, f"seed {seed}"
        assert edge_on < 0.16, f"seed {seed}"


def test_edge_on_bulge_wider_at_centre_than_disk() -> None:
    image = draw_symbol("edge_on_bulge", 128)[:, :, 0]
    centre_column = (image[:, 63] > 60).sum()
    disk_column = (image[:, 63 + 35] > 60).sum()

    assert centre_column > 2 * disk_column
    assert disk_column > 0


def test_draw_symbol_unknown_recipe_lists_known() -> None:
    with pytest.raises(KeyError, match="spiral_clockwise"):
        draw_symbol("sprial", 64)


def test_draw_symbol_rejects_tiny_size() -> None:
    with pytest.raises(ValueError, match="at least 8 pixels"):
        draw_symbol("cigar", 4)


def test_draw_symbol_rejects_integer_rng() -> None:
    with pytest.raises(TypeError, match="default_rng"):
        draw_symbol("cigar", 32, 3)  # type: ignore[arg-type]


def test_load_grey_png(tmp_path: Path) -> None:
    grey = (np.arange(32 * 32) % 256).astype(np.uint8).reshape(32, 32)
    path = tmp_path / "grey.png"
    Image.fromarray(grey, mode="L").save(path)

    loaded = load_symbol_image(path, 32)

    assert loaded.shape == (32, 32, 3)
    assert loaded.dtype == np.uint8
    for channel in range(3):
        assert np.array_equal(loaded[:, :, channel], grey)


def test_load_rgba_png_composites_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[:, :, 0], rgba[:, :, 1], rgba[:, :, 2] = 200, 100, 50
    rgba[:8, :, 3] = 255
    rgba[8:, :, 3] = 128
    rgba[:, :2, 3] = 0
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)

    loaded = load_symbol_image(path, 16)

    assert loaded.shape == (16, 16, 3)
    assert loaded.dtype == np.uint8
    assert loaded[0, 5].tolist() == [200, 100, 50]
    # 200 * 128 / 255 = 100.39, 100 * 128 / 255 = 50.20, 50 * 128 / 255 = 25.10
    assert loaded[12, 5].tolist() == [100, 50, 25]
    assert loaded[3, 0].tolist() == [0, 0, 0]
    assert loaded[12, 1].tolist() == [0, 0, 0]


def test_load_16bit_png_scales_to_8bit(tmp_path: Path) -> None:
    levels = np.array([[0, 257], [257 * 100, 65535]], dtype=np.uint16).repeat(4, 0).repeat(4, 1)
    path = tmp_path / "deep.png"
    Image.fromarray(levels).save(path)
    with Image.open(path) as written:
        written_mode = written.mode

    loaded = load_symbol_image(path, 8)

    assert written_mode == "I;16"
    assert loaded.shape == (8, 8, 3)
    assert loaded.dtype == np.uint8
    # value / 257: 0 -> 0, 257 -> 1, 25700 -> 100, 65535 -> 255
    assert loaded[0, 0].tolist() == [0, 0, 0]
    assert loaded[0, 7].tolist() == [1, 1, 1]
    assert loaded[7, 0].tolist() == [100, 100, 100]
    assert loaded[7, 7].tolist() == [255, 255, 255]


def test_load_16bit_png_resized(tmp_path: Path) -> None:
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((16, 16), 257 * 180, dtype=np.uint16)).save(path)

    loaded = load_symbol_image(path, 12)

    assert loaded.shape == (12, 12, 3)
    assert loaded.min() == 180
    assert loaded.max() == 180


def test_load_non_square_pads_with_black(tmp_path: Path) -> None:
    wide = np.full((10, 20, 3), (90, 160, 220), dtype=np.uint8)
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)

    loaded = load_symbol_image(path, 20)

    assert loaded.shape == (20, 20, 3)
    assert loaded[10, 10].tolist() == [90, 160, 220]
    assert loaded[0, 10].tolist() == [0, 0, 0]
    assert loaded[19, 10].tolist() == [0, 0, 0]


def test_load_resizes_uniform_image(tmp_path: Path) -> None:
    path = tmp_path / "uniform.png"
    Image.fromarray(np.full((50, 50, 3), 120, dtype=np.uint8)).save(path)

    loaded = load_symbol_image(path, 24)

    assert loaded.shape == (24, 24, 3)
    assert loaded.min() == 120
    assert loaded.max() == 120


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "no_such_symbol.png"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_symbol_image(path, 32)


def test_load_non_image_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_symbol_image(path, 32)


def test_symbol_bank_gz1_shapes_and_canonical() -> None:
    bank = SymbolBank(GZ1, 32, n_variants=3, seed=0)

    assert bank.images.shape == (6, 3, 32, 32, 3)
    assert bank.images.dtype == np.uint8
    assert bank.canonical.shape == (6, 32, 32, 3)
    for label, symbol in enumerate(GZ1.symbols):
        assert np.array_equal(bank.images[label, 0], draw_symbol(symbol, 32)), symbol
        assert not np.array_equal(bank.images[label, 1], bank.images[label, 2]), symbol


def test_symbol_bank_same_seed_same_images() -> None:
    first = SymbolBank(GZ1, 24, n_variants=4, seed=3)
    second = SymbolBank(GZ1, 24, n_variants=4, seed=3)
    other = SymbolBank(GZ1, 24, n_variants=4, seed=4)

    assert np.array_equal(first.images, second.images)
    assert not np.array_equal(first.images[:, 1:], other.images[:, 1:])
    assert np.array_equal(first.images[:, 0], other.images[:, 0])


def test_symbol_bank_with_user_image(tmp_path: Path) -> None:
    symbol_path = tmp_path / "clockwise.png"
    Image.fromarray(draw_symbol("spiral_clockwise", 128)).save(symbol_path)
    schema = ClassSchema(
        name="user",
        classes=(
            MorphologyClass("smooth", "smooth galaxy", "smooth_round"),
            MorphologyClass("my_spiral", "spiral galaxy with clockwise arms", str(symbol_path)),
        ),
    )

    bank = SymbolBank(schema, 128, n_variants=4, seed=1)

    assert bank.images.shape == (2, 4, 128, 128, 3)
    assert bank.images.dtype == np.uint8
    assert np.array_equal(bank.images[1, 0], load_symbol_image(symbol_path, 128))
    for variant in range(1, 4):
        assert not np.array_equal(bank.images[1, variant], bank.images[1, 0])
        # Rotated variants keep the Z-wise handedness of the user's image.
        assert arm_winding_slope(bank.images[1, variant]) < 0, f"variant {variant}"


def test_symbol_bank_rejects_unknown_symbol() -> None:
    schema = ClassSchema(
        name="broken",
        classes=(MorphologyClass("blob", "blob galaxy", "no_such_recipe"),),
    )
    with pytest.raises(ValueError, match="'blob'") as raised:
        SymbolBank(schema, 32, n_variants=2)
    assert "smooth_round" in str(raised.value)


def test_symbol_bank_non_image_file_names_class(tmp_path: Path) -> None:
    path = tmp_path / "symbol.png"
    path.write_bytes(b"\x00\x01 not a png")
    schema = ClassSchema(name="broken", classes=(MorphologyClass("blob", "blob galaxy", str(path)),))
    with pytest.raises(ValueError, match="'blob'"):
        SymbolBank(schema, 32, n_variants=2)


def test_symbol_sheet_grid_size_and_tiles() -> None:
    sheet = symbol_sheet(GZ1, size=48, n_variants=3, seed=0)
    pixels = np.asarray(sheet)

    # Width is gap 8 + labels 220 + 3 * (gap 8 + 48) + gap 8, and height is 8 + 6 * (48 + 8).
    assert sheet.size == (404, 344)
    assert sheet.mode == "RGB"
    # The canonical symbol of row 1 (spiral_clockwise) starts at x = 8 + 220 + 8, y = 8 + 56.
    assert np.array_equal(pixels[64 : 64 + 48, 236 : 236 + 48], draw_symbol("spiral_clockwise", 48))
    # The name is written in near-white antialiased text at the top left of a row,
    # on the grey (48, 48, 48) background.
    assert pixels[8:20, 8:120].max() > 200
    assert pixels[50:56, 8:228].tolist() == [[[48, 48, 48]] * 220] * 6
    # The jittered tiles are the first variants of a bank with the same seed.
    bank = SymbolBank(GZ1, 48, n_variants=16, seed=0)
    assert np.array_equal(pixels[64 : 64 + 48, 292 : 292 + 48], bank.images[1, 1])
    assert np.array_equal(pixels[64 : 64 + 48, 348 : 348 + 48], bank.images[1, 2])


def test_symbol_sheet_galaxy10_size() -> None:
    sheet = symbol_sheet(GALAXY10_DECALS, size=32, n_variants=2, label_width=100, gap=4)

    # Width is 4 + 100 + 2 * (4 + 32) + 4, and height is 4 + 10 * (32 + 4).
    assert sheet.size == (180, 364)


def test_save_symbol_sheet_reads_back(tmp_path: Path) -> None:
    path = save_symbol_sheet(tmp_path / "run" / "symbols.png", GZ1, size=40, n_variants=2)

    assert path == tmp_path / "run" / "symbols.png"
    with Image.open(path) as saved:
        read_back = np.asarray(saved.convert("RGB"))
    expected = np.asarray(symbol_sheet(GZ1, size=40, n_variants=2))
    # Height is 8 + 6 * (40 + 8), and width is 8 + 220 + 2 * (8 + 40) + 8.
    assert read_back.shape == (296, 332, 3)
    assert np.array_equal(read_back, expected)
