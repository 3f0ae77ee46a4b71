"""Batch augmentation that respects the class schema: rotations always, flips only when labelled right."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from galaxalign.models import ImageNormalization


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """Convert a (B, H, W, 3) uint8 batch to (B, 3, H, W) float in [0, 1], keeping the device."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(pixels: torch.Tensor, normalization: ImageNormalization) -> torch.Tensor:
    mean = torch.tensor(normalization.mean, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    std = torch.tensor(normalization.std, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - mean) / std


def sample_affine(
    batch: int,
    generator: torch.Generator,
    allow_flip: bool,
    scale_range: tuple[float, float] = (0.9, 1.1),
    max_shift: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one random rotation, scale, shift and optional mirror flip per image.

    Returns ``theta`` (B, 2, 3), the matrices that ``affine_grid`` uses to map
    output to input coordinates in [-1, 1], and ``flip`` (B,) bool. A matrix
    with a negative determinant is a mirror flip. ``max_shift`` is a fraction
    of the image width.
    """
    angle = torch.rand(batch, generator=generator) * (2 * math.pi)
    scale = torch.empty(batch).uniform_(*scale_range, generator=generator)
    shift = (torch.rand(batch, 2, generator=generator) * 2 - 1) * (2 * max_shift)
    if allow_flip:
        flip = torch.rand(batch, generator=generator) < 0.5
    else:
        flip = torch.zeros(batch, dtype=torch.bool)

    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    sign = torch.where(flip, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = cos * sign
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * sign
    theta[:, 1, 1] = cos
    theta[:, :, 2] = shift
    return theta, flip


def random_affine(
    pixels: torch.Tensor,
    labels: torch.Tensor,
    mirror: Sequence[int] | None,
    generator: torch.Generator,
    scale_range: tuple[float, float] = (0.9, 1.1),
    max_shift: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate by a uniform angle, rescale, shift and (where allowed) mirror each image.

    ``pixels`` is (B, 3, H, W) float. A flip happens with probability 0.5 only
    when ``mirror`` is given, and then the label becomes ``mirror[label]``
    (a clockwise spiral becomes anticlockwise). Random numbers come from
    ``generator`` (on the CPU) so a seed reproduces the batch on any device.
    Pixels that the rotation brings in from outside the cutout are filled by
    reflecting the sky at the border.
    """
    theta, flip = sample_affine(pixels.shape[0], generator, mirror is not None, scale_range, max_shift)
    return warp_affine(pixels, theta), mirror_labels(labels, flip, mirror)


def warp_affine(pixels: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample (B, 3, H, W) float ``pixels`` by the (B, 2, 3) matrices of :func:`sample_affine`.

    Pixels brought in from outside the cutout reflect the sky at the border.
    """
    theta = theta.to(device=pixels.device, dtype=pixels.dtype)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def mirror_labels(labels: torch.Tensor, flip: torch.Tensor, mirror: Sequence[int] | None) -> torch.Tensor:
    """Return ``labels`` with ``mirror[label]`` where ``flip`` (B,) is set; unchanged without ``mirror``."""
    if mirror is None or not bool(flip.any()):
        return labels
    mirror_map = torch.as_tensor(list(mirror), device=labels.device, dtype=labels.dtype)
    return torch.where(flip.to(labels.device), mirror_map[labels], labels)
