import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

from galaxalign.losses import class_aware_loss, clip_loss, contrastive_loss, stage1_loss, stage2_loss


def unit_rows(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_clip_loss_two_orthogonal_pairs_by_hand():
    a = unit_rows([1, 0], [0, 1])
    loss = clip_loss(a, a, torch.tensor(1.0))
    # Each row's logits are [1, 0]: cross-entropy = log(1 + e^-1) in both directions.
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_clip_loss_matches_open_clip():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(16, 8), dim=1)
    b = F.normalize(torch.randn(16, 8), dim=1)
    scale = torch.tensor(14.3)
    expected = open_clip.ClipLoss()(a, b, scale)
    assert clip_loss(a, b, scale).item() == pytest.approx(expected.item(), rel=1e-6)


def test_class_aware_loss_by_hand():
    a = unit_rows([1, 0], [1, 0], [0, 1])
    labels = torch.tensor([0, 0, 1])
    loss = class_aware_loss(a, a, torch.tensor(1.0), labels)
    # Rows 0 and 1 have logits [1, 1, 0] and two positives of logit 1: -(1 - log(2e + 1)).
    # Row 2 has logits [0, 0, 1] and one positive: -(1 - log(2 + e)). The matrix is
    # symmetric, so both directions give the same mean.
    expected = (2 * (math.log(2 * math.e + 1) - 1) + (math.log(2 + math.e) - 1)) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_class_aware_equals_clip_when_labels_distinct():
    torch.manual_seed(1)
    a = F.normalize(torch.randn(10, 6), dim=1)
    b = F.normalize(torch.randn(10, 6), dim=1)
    scale = torch.tensor(10.0)
    labels = torch.arange(10)
    assert class_aware_loss(a, b, scale, labels).item() == pytest.approx(
        clip_loss(a, b, scale).item(), rel=1e-6
    )


def test_contrastive_loss_rejects_unknown_kind():
    a = unit_rows([1, 0], [0, 1])
    with pytest.raises(ValueError, match="unknown loss kind 'supcon'"):
        contrastive_loss(a, a, torch.tensor(1.0), torch.tensor([0, 1]), kind="supcon")  # type: ignore[arg-type]


def test_stage1_loss_is_mean_of_two_pairs():
    torch.manual_seed(2)
    image, symbol, text = (F.normalize(torch.randn(8, 4), dim=1) for _ in range(3))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    scale = torch.tensor(5.0)
    loss, parts = stage1_loss(image, symbol, text, scale, labels, kind="clip")
    expected = (clip_loss(image, text, scale) + clip_loss(symbol, text, scale)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(parts) == {"image_text", "symbol_text"}


def test_stage2_loss_is_sum_of_three_pairs():
    torch.manual_seed(3)
    image, symbol, text = (F.normalize(torch.randn(8, 4), dim=1) for _ in range(3))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    scale = torch.tensor(5.0)
    loss, parts = stage2_loss(image, symbol, text, scale, labels, kind="class_aware")
    expected = (
        class_aware_loss(image, text, scale, labels)
        + class_aware_loss(image, symbol, scale, labels)
        + class_aware_loss(symbol, text, scale, labels)
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert sum(parts.values()) == pytest.approx(expected.item(), rel=1e-5)


def test_stage_losses_without_symbols_reduce_to_image_text():
    torch.manual_seed(4)
    image, text = (F.normalize(torch.randn(6, 4), dim=1) for _ in range(2))
    labels = torch.arange(6)
    scale = torch.tensor(3.0)
    one, _ = stage1_loss(image, None, text, scale, labels)
    two, _ = stage2_loss(image, None, text, scale, labels)
    assert one.item() == pytest.approx(clip_loss(image, text, scale).item(), rel=1e-6)
    assert two.item() == pytest.approx(clip_loss(image, text, scale).item(), rel=1e-6)
