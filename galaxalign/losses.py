"""Contrastive losses for the two training stages.

Each loss compares two batches of L2-normalised embeddings row by row:
row i of ``a`` and row i of ``b`` belong to the same galaxy (or class).
Embeddings of prompts and symbols are usually computed once per distinct
class in a batch and expanded to one row per galaxy with an index. The
expansion costs nothing here, because the (B, B) logit matrix is tiny next
to the towers.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossKind = Literal["clip", "class_aware"]
LOSS_KINDS: tuple[str, ...] = ("clip", "class_aware")


def clip_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE loss of CLIP: row i of ``a`` matches row i of ``b`` only.

    When two rows carry the same class, their prompts are identical and the
    loss treats the other galaxy's prompt as a negative, as CLIP does.
    """
    logits = logit_scale * a @ b.T
    targets = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def class_aware_loss(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Symmetric contrastive loss in which every same-class pair is a positive.

    For each row, the loss is the mean negative log-softmax over its positives
    (the "outside the log" form of the supervised contrastive loss of Khosla
    et al. 2020), taken in both directions and averaged.
    """
    logits = logit_scale * a @ b.T
    positives = (labels[:, None] == labels[None, :]).to(logits.dtype)

    def one_direction(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        log_prob = F.log_softmax(scores, dim=1)
        return -((log_prob * mask).sum(dim=1) / mask.sum(dim=1)).mean()

    return (one_direction(logits, positives) + one_direction(logits.T, positives.T)) / 2


def contrastive_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    labels: torch.Tensor,
    kind: LossKind = "clip",
) -> torch.Tensor:
    """Dispatch to :func:`clip_loss` or :func:`class_aware_loss` by ``kind``."""
    if kind == "clip":
        return clip_loss(a, b, logit_scale)
    if kind == "class_aware":
        return class_aware_loss(a, b, logit_scale, labels)
    raise ValueError(f"unknown loss kind {kind!r}; choose from {LOSS_KINDS}")


def stage1_loss(
    image: torch.Tensor,
    symbol: torch.Tensor | None,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    labels: torch.Tensor,
    kind: LossKind = "clip",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Warm-up loss: the mean of the image–text and symbol–text losses.

    With ``symbol=None`` (the ablation without symbols) it is the image–text
    loss alone. Returns the loss and its parts as floats for logging.
    """
    image_text = contrastive_loss(image, text, logit_scale, labels, kind)
    parts = {"image_text": float(image_text.detach())}
    if symbol is None:
        return image_text, parts
    symbol_text = contrastive_loss(symbol, text, logit_scale, labels, kind)
    parts["symbol_text"] = float(symbol_text.detach())
    return (image_text + symbol_text) / 2, parts


def stage2_loss(
    image: torch.Tensor,
    symbol: torch.Tensor | None,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    labels: torch.Tensor,
    kind: LossKind = "clip",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Joint loss: the sum of the image–text, image–symbol and symbol–text losses.

    With ``symbol=None`` it is the image–text loss alone.
    """
    image_text = contrastive_loss(image, text, logit_scale, labels, kind)
    parts = {"image_text": float(image_text.detach())}
    if symbol is None:
        return image_text, parts
    image_symbol = contrastive_loss(image, symbol, logit_scale, labels, kind)
    symbol_text = contrastive_loss(symbol, text, logit_scale, labels, kind)
    parts["image_symbol"] = float(image_symbol.detach())
    parts["symbol_text"] = float(symbol_text.detach())
    return image_text + image_symbol + symbol_text, parts
