import math

import numpy as np
import pytest
import torch

from galaxalign.data.augment import normalize, random_affine, sample_affine, to_float_nchw
from galaxalign.models import ImageNormalization


def test_to_float_nchw_scales_and_permutes():
    images = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)  # (1, 1, 1, 3)
    pixels = to_float_nchw(images)
    assert pixels.shape == (1, 3, 1, 1)
    assert pixels[0, :, 0, 0].tolist() == pytest.approx([0.0, 128 / 255, 1.0])


def test_normalize_uses_mean_and_std():
    pixels = torch.full((1, 3, 2, 2), 0.5)
    out = normalize(pixels, ImageNormalization(mean=(0.5, 0.25, 0.0), std=(1.0, 0.5, 0.25)))
    assert out[0, :, 0, 0].tolist() == pytest.approx([0.0, 0.5, 2.0])


def test_flips_only_when_schema_allows():
    generator = torch.Generator().manual_seed(0)
    theta, flip = sample_affine(500, generator, allow_flip=False)
    determinants = torch.linalg.det(theta[:, :, :2])
    assert not flip.any()
    assert (determinants > 0).all()


def test_flipped_matrices_have_negative_determinant():
    generator = torch.Generator().manual_seed(1)
    theta, flip = sample_affine(500, generator, allow_flip=True)
    determinants = torch.linalg.det(theta[:, :, :2])
    assert torch.equal(determinants < 0, flip)
    assert 0.4 < flip.float().mean().item() < 0.6


def test_flip_swaps_handedness_labels():
    mirror = (0, 2, 1, 3, 4, 5)
    labels = torch.tensor([1, 2, 0, 3] * 100)
    pixels = torch.rand(len(labels), 3, 8, 8)
    _, out = random_affine(pixels, labels, mirror, torch.Generator().manual_seed(2))
    _, flip = sample_affine(len(labels), torch.Generator().manual_seed(2), allow_flip=True)
    expected = torch.where(flip, torch.tensor(mirror)[labels], labels)
    assert torch.equal(out, expected)
    assert (out[labels == 0] == 0).all()
    assert (out[labels == 3] == 3).all()


def test_labels_unchanged_without_mirror():
    labels = torch.tensor([1, 2] * 50)
    _, out = random_affine(torch.rand(100, 3, 8, 8), labels, None, torch.Generator().manual_seed(3))
    assert torch.equal(out, labels)


def test_same_seed_same_batch():
    pixels = torch.rand(4, 3, 16, 16)
    labels = torch.zeros(4, dtype=torch.long)
    first, _ = random_affine(pixels, labels, (0,), torch.Generator().manual_seed(4))
    second, _ = random_affine(pixels, labels, (0,), torch.Generator().manual_seed(4))
    assert torch.equal(first, second)


def test_round_galaxy_survives_rotation():
    size = 32
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    disk = np.exp(-(x**2 + y**2) / (2 * 6.0**2)).astype(np.float32)
    pixels = torch.from_numpy(np.broadcast_to(disk, (16, 3, size, size)).copy())
    out, _ = random_affine(
        pixels,
        torch.zeros(16, dtype=torch.long),
        None,
        torch.Generator().manual_seed(5),
        scale_range=(1.0, 1.0),
        max_shift=0.0,
    )
    # Inside the inscribed circle a centred Gaussian is unchanged by rotation up to
    # interpolation error; the corners are filled from outside the cutout.
    inside = torch.from_numpy(np.hypot(x, y) < size / 2 - 1)
    assert (out - pixels)[:, :, inside].abs().max().item() < 0.01


def test_rotation_matrix_is_orthogonal_times_scale():
    theta, _ = sample_affine(50, torch.Generator().manual_seed(6), allow_flip=True, scale_range=(0.8, 1.2))
    linear = theta[:, :, :2]
    gram = linear @ linear.transpose(1, 2)
    # Off-diagonal zero and equal diagonal: a rotation (or reflection) times 1/scale.
    assert gram[:, 0, 1].abs().max().item() < 1e-6
    assert torch.allclose(gram[:, 0, 0], gram[:, 1, 1], atol=1e-6)
    assert gram[:, 0, 0].min().item() >= 1 / 1.2**2 - 1e-6
    assert gram[:, 0, 0].max().item() <= 1 / 0.8**2 + 1e-6
    assert math.isfinite(gram.sum().item())
