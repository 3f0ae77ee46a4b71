"""Procedural schematic symbols of galaxy shapes, user symbol images and pre-drawn symbol banks.

Every symbol is a light shape on a black background, like a galaxy on dark
sky, returned as a (size, size, 3) uint8 RGB array with equal channels. A
recipe draws on a canvas supersampled 4 times with PIL ImageDraw and box-filters
it down, so edges stay clean at 64 pixels. ``rng=None`` gives the canonical
drawing. With a random generator the drawing is rotated by any angle, scaled
by up to 15% either way, and its lines are made thinner or thicker, so that a
symbol tower is trained on varied drawings.

Handedness follows Galaxy Zoo 1 (Land et al. 2008, MNRAS 388, 1686), where
clockwise spirals are "Z-wise" and anticlockwise spirals are "S-wise". In the
image as displayed (row 0 at the top), an arm of a Z-wise spiral followed
inward from its outer tip toward the centre turns clockwise. In pixel
coordinates (x to the right, y downward) the angle ``atan2(y, x)`` of a Z-wise
arm therefore grows as its radius shrinks. ``spiral_anticlockwise`` is the
exact left-right mirror of ``spiral_clockwise`` drawn with the same generator
state. The generic spiral recipes (``spiral``, ``tight_spiral``,
``loose_spiral``, ``barred_spiral``) and ``merger`` and ``disturbed`` pick
their winding direction at random, because their classes have no handedness.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from galaxalign.schema import ClassSchema

logger = logging.getLogger(__name__)

# Pitch angle of the spiral arms in degrees: the angle between an arm and the
# circle through the same point. Jittered draws vary it by up to 10% either way.
SPIRAL_PITCH_DEGREES: dict[str, float] = {
    "tight": 12.0,
    "medium": 22.0,
    "loose": 35.0,
    "barred": 18.0,
}

MIN_SYMBOL_SIZE = 8

_SUPERSAMPLE = 4
_SCALE_JITTER = 0.15
_LINE_WIDTH_RANGE = (0.75, 1.3)
_PITCH_JITTER = 0.10

# Symbol units: x to the right, y downward, 1.0 is half the canvas width.
# Shapes reach at most 0.8 units, so a 15% larger draw still fits.


class _Canvas:
    """A supersampled grey canvas in symbol units, with the jitter of one draw."""

    def __init__(self, size: int, rng: np.random.Generator | None) -> None:
        self.size = size
        self.rng = rng
        self.pixels = size * _SUPERSAMPLE
        self.center = (self.pixels - 1) / 2
        self.half = self.pixels / 2
        if rng is None:
            self.rotation, self.scale, self.line_width = 0.0, 1.0, 1.0
        else:
            self.rotation = float(rng.uniform(0.0, 2 * math.pi))
            self.scale = float(rng.uniform(1 - _SCALE_JITTER, 1 + _SCALE_JITTER))
            self.line_width = float(rng.uniform(*_LINE_WIDTH_RANGE))
        self.base = Image.new("L", (self.pixels, self.pixels), 0)
        self._start_layer()

    def _start_layer(self) -> None:
        self.layer = Image.new("L", (self.pixels, self.pixels), 0)
        self.draw = ImageDraw.Draw(self.layer)

    def new_layer(self) -> None:
        """Merge what was drawn so far by pixel-wise maximum and start a fresh layer.

        Overlapping components (two merging galaxies) then combine like light
        instead of the later one covering the earlier one.
        """
        self.base = Image.fromarray(np.maximum(np.asarray(self.base), np.asarray(self.layer)))
        self._start_layer()

    def vary(self, canonical: float, low: float, high: float) -> float:
        """Return ``canonical`` for the canonical draw, else a uniform draw from [low, high)."""
        if self.rng is None:
            return canonical
        return float(self.rng.uniform(low, high))

    def winding(self, canonical: int = 1) -> int:
        """Return +1 (Z-wise) or -1 (S-wise): ``canonical`` without a generator, else at random."""
        if self.rng is None:
            return canonical
        return 1 if self.rng.random() < 0.5 else -1

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """Map (n, 2) points in symbol units to supersampled pixel coordinates."""
        cos, sin = math.cos(self.rotation), math.sin(self.rotation)
        x = points[:, 0] * self.scale
        y = points[:, 1] * self.scale
        rotated = np.stack([x * cos - y * sin, x * sin + y * cos], axis=1)
        return self.center + rotated * self.half

    def width_pixels(self, width: np.ndarray | float) -> np.ndarray:
        """Convert a line width in symbol units to supersampled pixels, with the width jitter."""
        return np.asarray(width, dtype=float) * self.scale * self.half * self.line_width

    def polygon(self, points: np.ndarray, fill: int) -> None:
        self.draw.polygon(self.to_pixels(points).ravel().tolist(), fill=int(fill))

    def ellipse(self, center: tuple[float, float], a: float, b: float, angle: float, fill: int) -> None:
        """Fill an ellipse with semi-axes ``a`` (along ``angle``, radians) and ``b``."""
        self.polygon(_ellipse_points(center, a, b, angle), fill)

    def blob(
        self,
        center: tuple[float, float],
        a: float,
        b: float,
        angle: float = 0.0,
        core: int = 255,
        edge: int = 90,
    ) -> None:
        """Fill an ellipse whose brightness falls from ``core`` at the centre to ``edge`` at the rim.

        The fall-off is drawn as concentric ellipses, about one per output
        pixel of radius, so the steps vanish after downsampling.
        """
        radius_out = a * self.scale * self.size / 2
        n_layers = int(np.clip(round(radius_out), 6, 64))
        for k in range(n_layers):
            t = 1.0 - k / n_layers
            value = edge + (core - edge) * (1.0 - t) ** 1.5
            self.ellipse(center, a * t, b * t, angle, int(round(value)))

    def ribbon(self, points: np.ndarray, widths: np.ndarray, fills: np.ndarray) -> None:
        """Draw a polyline whose width (symbol units) and brightness change along it.

        Each segment is a quadrilateral between the offset edges of the
        centre line, and both ends get round caps.
        """
        pixels = self.to_pixels(points)
        half_widths = self.width_pixels(widths) / 2
        tangents = np.gradient(pixels, axis=0)
        tangents /= np.maximum(np.linalg.norm(tangents, axis=1, keepdims=True), 1e-9)
        normals = np.stack([-tangents[:, 1], tangents[:, 0]], axis=1)
        left = pixels + normals * half_widths[:, None]
        right = pixels - normals * half_widths[:, None]

        for i in range(len(pixels) - 1):
            quad = [tuple(left[i]), tuple(left[i + 1]), tuple(right[i + 1]), tuple(right[i])]
            self.draw.polygon(quad, fill=int(fills[i]))
        for index in (0, -1):
            x, y = pixels[index]
            r = half_widths[index]
            self.draw.ellipse((x - r, y - r, x + r, y + r), fill=int(fills[index]))

    def to_array(self) -> np.ndarray:
        """Merge the layers, box-filter down to ``size`` pixels and return (size, size, 3) uint8."""
        self.new_layer()
        small = np.asarray(self.base.reduce(_SUPERSAMPLE))
        return np.repeat(small[:, :, None], 3, axis=2)


def _ellipse_points(
    center: tuple[float, float], a: float, b: float, angle: float, n_points: int = 96
) -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, n_points, endpoint=False)
    x, y = a * np.cos(t), b * np.sin(t)
    cos, sin = math.cos(angle), math.sin(angle)
    return np.stack([center[0] + x * cos - y * sin, center[1] + x * sin + y * cos], axis=1)


def _spiral_arm(
    start_radius: float,
    end_radius: float,
    pitch_degrees: float,
    start_angle: float,
    winding: int,
    n_points: int = 160,
) -> np.ndarray:
    """Return (n_points, 2) points of a logarithmic spiral arm from its inner to its outer end.

    The radius is ``start_radius * exp(tan(pitch) * s)`` after turning by
    ``s`` radians. ``winding=+1`` gives a Z-wise (clockwise) arm: going
    outward its angle ``atan2(y, x)`` decreases, so going inward it turns
    clockwise on the displayed image. ``winding=-1`` gives an S-wise arm.
    """
    k = math.tan(math.radians(pitch_degrees))
    turn = math.log(end_radius / start_radius) / k
    s = np.linspace(0.0, turn, n_points)
    radius = start_radius * np.exp(k * s)
    angle = start_angle - winding * s
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


def _draw_arms(
    canvas: _Canvas,
    start_radius: float,
    pitch_degrees: float,
    winding: int,
    base_width: float,
    tip_width: float,
    end_radius: float = 0.8,
) -> None:
    """Draw two point-symmetric tapered arms that start at angles 0 and pi."""
    pitch = pitch_degrees * canvas.vary(1.0, 1 - _PITCH_JITTER, 1 + _PITCH_JITTER)
    for start_angle in (0.0, math.pi):
        points = _spiral_arm(start_radius, end_radius, pitch, start_angle, winding)
        fraction = np.linspace(0.0, 1.0, len(points))
        widths = base_width + (tip_width - base_width) * fraction
        fills = np.round(235 - 85 * fraction)
        canvas.ribbon(points, widths, fills)


def _draw_spiral_galaxy(
    size: int,
    rng: np.random.Generator | None,
    pitch_degrees: float,
    bulge_radius: float,
    arm_start: float,
    winding: int | None,
) -> np.ndarray:
    """Draw a two-arm spiral with a bulge. ``winding=None`` picks the direction at random."""
    canvas = _Canvas(size, rng)
    direction = canvas.winding() if winding is None else winding
    _draw_arms(canvas, arm_start, pitch_degrees, direction, base_width=0.085, tip_width=0.035)
    canvas.new_layer()
    canvas.blob((0.0, 0.0), bulge_radius, bulge_radius, core=255, edge=170)
    return canvas.to_array()


def _draw_smooth_round(size: int, rng: np.random.Generator | None) -> np.ndarray:
    canvas = _Canvas(size, rng)
    canvas.blob((0.0, 0.0), 0.62, 0.62, core=255, edge=80)
    return canvas.to_array()


def _draw_in_between_round(size: int, rng: np.random.Generator | None) -> np.ndarray:
    canvas = _Canvas(size, rng)
    canvas.blob((0.0, 0.0), 0.68, 0.68 * 0.7, core=255, edge=80)
    return canvas.to_array()


def _draw_cigar(size: int, rng: np.random.Generator | None) -> np.ndarray:
    canvas = _Canvas(size, rng)
    canvas.blob((0.0, 0.0), 0.75, 0.75 * 0.3, core=255, edge=80)
    return canvas.to_array()


def _draw_edge_on_no_bulge(size: int, rng: np.random.Generator | None) -> np.ndarray:
    canvas = _Canvas(size, rng)
    # The disk thickness counts as a line width, so it follows the width jitter.
    thickness = 0.78 * 0.1 * canvas.line_width
    canvas.blob((0.0, 0.0), 0.78, thickness, core=250, edge=110)
    return canvas.to_array()


def _draw_edge_on_bulge(size: int, rng: np.random.Generator | None) -> np.ndarray:
    canvas = _Canvas(size, rng)
    thickness = 0.78 * 0.1 * canvas.line_width
    canvas.blob((0.0, 0.0), 0.78, thickness, core=230, edge=110)
    canvas.new_layer()
    canvas.blob((0.0, 0.0), 0.24, 0.22, core=255, edge=120)
    return canvas.to_array()


def _draw_barred_spiral(size: int, rng: np.random.Generator | None) -> np.ndarray:
    canvas = _Canvas(size, rng)
    winding = canvas.winding()
    bar_half_length = 0.3
    # The arms start just inside the bar's ends so that bar and arms join without a gap.
    _draw_arms(
        canvas,
        bar_half_length * 0.95,
        SPIRAL_PITCH_DEGREES["barred"],
        winding,
        base_width=0.085,
        tip_width=0.035,
    )
    canvas.new_layer()
    canvas.blob((0.0, 0.0), bar_half_length, bar_half_length * 0.3, core=245, edge=175)
    canvas.new_layer()
    canvas.blob((0.0, 0.0), 0.11, 0.11, core=255, edge=200)
    return canvas.to_array()


def _draw_tight_spiral(size: int, rng: np.random.Generator | None) -> np.ndarray:
    return _draw_spiral_galaxy(
        size, rng, SPIRAL_PITCH_DEGREES["tight"], bulge_radius=0.19, arm_start=0.2, winding=None
    )


def _draw_loose_spiral(size: int, rng: np.random.Generator | None) -> np.ndarray:
    return _draw_spiral_galaxy(
        size, rng, SPIRAL_PITCH_DEGREES["loose"], bulge_radius=0.1, arm_start=0.11, winding=None
    )


def _draw_spiral(size: int, rng: np.random.Generator | None) -> np.ndarray:
    return _draw_spiral_galaxy(
        size, rng, SPIRAL_PITCH_DEGREES["medium"], bulge_radius=0.14, arm_start=0.15, winding=None
    )


def _draw_spiral_clockwise(size: int, rng: np.random.Generator | None) -> np.ndarray:
    return _draw_spiral_galaxy(
        size, rng, SPIRAL_PITCH_DEGREES["medium"], bulge_radius=0.14, arm_start=0.15, winding=1
    )


def _draw_spiral_anticlockwise(size: int, rng: np.random.Generator | None) -> np.ndarray:
    # Mirroring the finished clockwise drawing makes the pair exact mirror images.
    return np.ascontiguousarray(np.fliplr(_draw_spiral_clockwise(size, rng)))


def _draw_merger(size: int, rng: np.random.Generator | None) -> np.ndarray:
    canvas = _Canvas(size, rng)
    winding = canvas.winding()
    separation = canvas.vary(0.24, 0.2, 0.28)
    tilt = canvas.vary(0.35, 0.2, 0.5)
    first = (-separation * math.cos(tilt), -separation * math.sin(tilt))
    second = (-first[0], -first[1])

    # Tidal tails: point-symmetric arcs that leave each galaxy and curl round the pair.
    for origin in (first, second):
        start_angle = math.atan2(origin[1], origin[0])
        s = np.linspace(0.0, 1.0, 120)
        radius = separation + 0.5 * s
        angle = start_angle - winding * 2.0 * s
        points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        canvas.ribbon(points, 0.13 - 0.1 * s, np.round(175 - 100 * s))
    canvas.new_layer()

    first_size = canvas.vary(0.3, 0.27, 0.33)
    second_size = canvas.vary(0.25, 0.22, 0.28)
    canvas.blob(first, first_size, first_size * 0.75, angle=0.4, core=255, edge=110)
    canvas.new_layer()
    canvas.blob(second, second_size, second_size * 0.8, angle=-0.6, core=250, edge=110)
    return canvas.to_array()


# Components of the canonical disturbed galaxy: (x, y, a, b, angle in radians, core, edge).
_DISTURBED_BODY = (
    (0.0, 0.0, 0.4, 0.28, 0.45, 200, 85),
    (0.22, -0.17, 0.25, 0.17, -0.35, 185, 80),
    (-0.26, 0.14, 0.22, 0.13, 1.05, 170, 70),
    (0.04, 0.3, 0.17, 0.11, -0.9, 150, 60),
)
# Bright star-forming knots: (x, y, radius).
_DISTURBED_KNOTS = (
    (-0.1, -0.08, 0.065),
    (0.23, -0.2, 0.055),
    (-0.3, 0.18, 0.05),
    (0.12, 0.16, 0.045),
    (0.36, -0.04, 0.04),
)


def _draw_disturbed(size: int, rng: np.random.Generator | None) -> np.ndarray:
    canvas = _Canvas(size, rng)
    mirror = canvas.winding()

    def moved(x: float, y: float) -> tuple[float, float]:
        dx = canvas.vary(0.0, -0.05, 0.05)
        dy = canvas.vary(0.0, -0.05, 0.05)
        return mirror * x + dx, y + dy

    body = [
        (*moved(x, y), a, b, mirror * angle, core, edge) for x, y, a, b, angle, core, edge in _DISTURBED_BODY
    ]
    knots = [(*moved(x, y), r * canvas.vary(1.0, 0.8, 1.2)) for x, y, r in _DISTURBED_KNOTS]
    plume_angle = canvas.vary(-0.6, -0.8, -0.4)

    # Shift everything so that the brightness centroid, weighted by area times
    # mean brightness of each part, sits at the centre.
    weights = [a * b * (core + edge) / 2 for _, _, a, b, _, core, edge in body]
    weights += [r * r * 250 for _, _, r in knots]
    positions = [(x, y) for x, y, *_ in body] + [(x, y) for x, y, _ in knots]
    offset_x, offset_y = np.average(np.array(positions), axis=0, weights=weights)

    plume_start = (0.3 * mirror, -0.2)
    s = np.linspace(0.0, 1.0, 60)
    plume = np.stack(
        [
            plume_start[0] + mirror * 0.4 * s * math.cos(plume_angle) - offset_x,
            plume_start[1] + 0.4 * s * math.sin(plume_angle) + 0.08 * s**2 - offset_y,
        ],
        axis=1,
    )
    canvas.ribbon(plume, 0.16 - 0.12 * s, np.round(110 - 60 * s))
    canvas.new_layer()

    for x, y, a, b, angle, core, edge in body:
        canvas.blob((x - offset_x, y - offset_y), a, b, angle, core=core, edge=edge)
        canvas.new_layer()
    for x, y, r in knots:
        canvas.blob((x - offset_x, y - offset_y), r, r, core=255, edge=215)
    return canvas.to_array()


def _draw_dont_know(size: int, rng: np.random.Generator | None) -> np.ndarray:
    canvas = _Canvas(size, rng)
    canvas.blob((0.0, 0.0), 0.3, 0.3, core=90, edge=20)
    canvas.new_layer()

    # Four diffraction spikes, as a telescope's secondary-mirror supports make them.
    s = np.linspace(0.0, 1.0, 40)
    for angle in (0.0, 0.5 * math.pi, math.pi, 1.5 * math.pi):
        radius = 0.05 + 0.75 * s
        points = np.stack([radius * math.cos(angle), radius * math.sin(angle)], axis=1)
        canvas.ribbon(points, 0.05 - 0.044 * s, np.round(235 - 160 * s))
    canvas.new_layer()

    canvas.blob((0.0, 0.0), 0.13, 0.13, core=255, edge=200)
    return canvas.to_array()


SYMBOL_RECIPES: dict[str, Callable[[int, np.random.Generator | None], np.ndarray]] = {
    "smooth_round": _draw_smooth_round,
    "in_between_round": _draw_in_between_round,
    "cigar": _draw_cigar,
    "edge_on_no_bulge": _draw_edge_on_no_bulge,
    "edge_on_bulge": _draw_edge_on_bulge,
    "barred_spiral": _draw_barred_spiral,
    "tight_spiral": _draw_tight_spiral,
    "loose_spiral": _draw_loose_spiral,
    "spiral": _draw_spiral,
    "spiral_clockwise": _draw_spiral_clockwise,
    "spiral_anticlockwise": _draw_spiral_anticlockwise,
    "merger": _draw_merger,
    "disturbed": _draw_disturbed,
    "dont_know": _draw_dont_know,
}


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SYMBOL_SIZE:
        raise ValueError(f"symbol size must be an integer of at least {MIN_SYMBOL_SIZE} pixels, got {size!r}")


def draw_symbol(recipe: str, size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw the symbol ``recipe`` as a (size, size, 3) uint8 RGB array, light on black.

    ``rng=None`` gives the canonical drawing. With a generator the drawing is
    rotated, rescaled and its line widths changed, reproducibly for a seeded
    generator. Raises ``KeyError`` listing the known recipes for an unknown name.
    """
    try:
        draw = SYMBOL_RECIPES[recipe]
    except KeyError:
        raise KeyError(f"unknown symbol recipe {recipe!r}; known recipes: {sorted(SYMBOL_RECIPES)}") from None
    _check_size(size)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy Generator or None, got {type(rng).__name__}. "
            "Pass np.random.default_rng(seed)"
        )
    return draw(int(size), rng)


def _to_8bit_grey(image: Image.Image) -> Image.Image:
    """Convert 16-bit, 32-bit integer or float grey images to 8-bit "L"."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        values = values / 257.0
    elif image.mode == "I" and values.max(initial=0) > 255:
        # A 32-bit integer image: 16-bit data when it fits, else stretched to its own maximum.
        top = 65535.0 if values.max() <= 65535 else values.max()
        values = values / top * 255.0
    elif image.mode == "F" and values.max(initial=0) <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), mode="L")


def _to_rgb_on_black(image: Image.Image) -> np.ndarray:
    """Return an (h, w, 3) uint8 array, compositing any transparency onto black."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_8bit_grey(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("RGB"))
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    rgb = rgba[:, :, :3] * rgba[:, :, 3:4] / 255.0
    return np.round(rgb).astype(np.uint8)


def _pad_to_square(pixels: np.ndarray) -> np.ndarray:
    """Centre a non-square image on a black square, so resizing keeps its shape."""
    height, width = pixels.shape[:2]
    side = max(height, width)
    if height == width:
        return pixels
    square = np.zeros((side, side, 3), dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = pixels
    return square


def load_symbol_image(path: str | Path, size: int) -> np.ndarray:
    """Load a user's own symbol image as a (size, size, 3) uint8 RGB array.

    Any file PIL reads works. Grey images are copied into all three channels,
    transparency is composited onto black (``round(value * alpha / 255)``),
    16-bit images are scaled to 8 bits (``round(value / 257)``) and EXIF
    rotation is applied. A non-square image is centred on a black square before
    it is resized with Lanczos filtering, so its shape is not stretched.
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one
    that is not a readable image.
    """
    _check_size(size)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"symbol image {path} not found. Give the path of an existing image file "
            f"or one of the built-in recipes {sorted(SYMBOL_RECIPES)}"
        )
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(
            f"failed to read symbol image {path} ({err}). Save it as a PNG or JPEG image "
            "with a light symbol on a dark background"
        ) from err

    pixels = _pad_to_square(_to_rgb_on_black(image))
    if pixels.shape[0] != size:
        pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS))
    return np.ascontiguousarray(pixels)


def _rotate(pixels: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre, filling uncovered corners with black. Rotations keep handedness."""
    rotated = Image.fromarray(pixels).rotate(degrees, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))
    return np.asarray(rotated)


class SymbolBank:
    """Pre-drawn symbol variants for every class of a schema, so training never draws in a step.

    ``images`` is a (n_classes, n_variants, size, size, 3) uint8 RGB array in
    the label order of the schema, light symbols on black. Variant 0 of each
    class is the canonical drawing, or the user's image as loaded. The other
    variants are jittered draws of a recipe, or the user's image rotated by
    uniform random angles. Rotations keep handedness, so no variant is a
    mirror image. Class ``i`` draws from ``np.random.default_rng([seed, i])``,
    so its variants do not depend on the other classes.
    """

    def __init__(self, schema: ClassSchema, size: int, n_variants: int = 16, seed: int = 0) -> None:
        _check_size(size)
        if n_variants < 1:
            raise ValueError(f"n_variants must be at least 1, got {n_variants}")
        self.schema = schema
        self.size = int(size)
        self.n_variants = int(n_variants)
        self.seed = int(seed)
        self.images = np.zeros((len(schema), self.n_variants, self.size, self.size, 3), dtype=np.uint8)

        progress = tqdm(schema.classes, desc="drawing symbols", unit="class", leave=False)
        for label, morphology in enumerate(progress):
            rng = np.random.default_rng([self.seed, label])
            self.images[label] = self._draw_variants(morphology.name, morphology.symbol, rng)
        logger.info(
            "drew %d symbol %s of %d px for each of the %d classes of schema %r",
            self.n_variants,
            "variant" if self.n_variants == 1 else "variants",
            self.size,
            len(schema),
            schema.name,
        )

    def _draw_variants(self, class_name: str, symbol: str, rng: np.random.Generator) -> np.ndarray:
        variants = np.zeros((self.n_variants, self.size, self.size, 3), dtype=np.uint8)
        if symbol in SYMBOL_RECIPES:
            variants[0] = draw_symbol(symbol, self.size)
            for v in range(1, self.n_variants):
                variants[v] = draw_symbol(symbol, self.size, rng)
            return variants

        if not Path(symbol).expanduser().is_file():
            raise ValueError(
                f"class {class_name!r} of schema {self.schema.name!r}: symbol {symbol!r} is neither "
                f"a built-in recipe nor an existing image file. Use one of {sorted(SYMBOL_RECIPES)} "
                "or the path of your own symbol image"
            )
        try:
            image = load_symbol_image(symbol, self.size)
        except ValueError as err:
            raise ValueError(f"class {class_name!r} of schema {self.schema.name!r}: {err}") from err
        variants[0] = image
        for v in range(1, self.n_variants):
            variants[v] = _rotate(image, float(rng.uniform(0.0, 360.0)))
        return variants

    @property
    def canonical(self) -> np.ndarray:
        """The canonical symbol of each class, (n_classes, size, size, 3) uint8."""
        return self.images[:, 0]


_SHEET_BACKGROUND = (48, 48, 48)
_NAME_COLOUR = (255, 255, 255)
_PROMPT_COLOUR = (190, 190, 190)


def _wrap_text(text: str, font: Any, max_width: int) -> list[str]:
    """Break ``text`` into lines no wider than ``max_width`` pixels.

    A word wider than ``max_width`` gets a line of its own, which the caller must check.
    """
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and font.getlength(candidate) > max_width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def _draw_row_label(
    draw: ImageDraw.ImageDraw,
    font: Any,
    name: str,
    prompt: str,
    box: tuple[int, int, int, int],
) -> None:
    """Write the class name in ``box`` (left, top, width, height), and the prompt below it if it fits."""
    left, top, width, height = box
    line_height = font.getbbox("Ag")[3] + 3
    draw.text((left, top), name, fill=_NAME_COLOUR, font=font)

    prompt_lines = _wrap_text(prompt, font, width)
    fits_across = all(font.getlength(line) <= width for line in prompt_lines)
    fits_down = (1 + len(prompt_lines)) * line_height <= height
    if not (fits_across and fits_down):
        return
    for i, line in enumerate(prompt_lines, start=1):
        draw.text((left, top + i * line_height), line, fill=_PROMPT_COLOUR, font=font)


def symbol_sheet(
    schema: ClassSchema,
    size: int = 96,
    n_variants: int = 4,
    seed: int = 0,
    label_width: int = 220,
    gap: int = 8,
) -> Image.Image:
    """Return an RGB sheet with one row per class: its name and prompt, then its symbols.

    Each row shows the canonical symbol and ``n_variants - 1`` jittered draws,
    which equal the first variants of a :class:`SymbolBank` with the same seed. The prompt is shown under the
    class name when it fits in ``label_width`` pixels and the row height.
    The sheet is ``gap + label_width + n_variants * (gap + size) + gap``
    pixels wide and ``gap + n_classes * (size + gap)`` pixels high.
    """
    bank = SymbolBank(schema, size, n_variants=n_variants, seed=seed)
    width = gap + label_width + n_variants * (gap + size) + gap
    height = gap + len(schema) * (size + gap)
    sheet = Image.new("RGB", (width, height), _SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()

    for label, morphology in enumerate(schema.classes):
        top = gap + label * (size + gap)
        _draw_row_label(draw, font, morphology.name, morphology.prompt, (gap, top, label_width, size))
        for v in range(n_variants):
            left = gap + label_width + gap + v * (size + gap)
            sheet.paste(Image.fromarray(bank.images[label, v]), (left, top))
    return sheet


def save_symbol_sheet(path: str | Path, schema: ClassSchema, **kwargs: Any) -> Path:
    """Write :func:`symbol_sheet` of ``schema`` to ``path`` (format from the suffix, PNG advised).

    Keyword arguments go to :func:`symbol_sheet`. Missing parent folders are
    created. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    symbol_sheet(schema, **kwargs).save(path)
    logger.info("wrote the symbol sheet of schema %r to %s", schema.name, path)
    return path
