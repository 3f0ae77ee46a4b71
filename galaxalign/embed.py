"""Embedding extraction: galaxy images, class prompts and symbols into vectors on disk."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from galaxalign.data.augment import normalize, to_float_nchw
from galaxalign.models import ImageNormalization, TriModalCLIP
from galaxalign.schema import ClassSchema

logger = logging.getLogger(__name__)


def autocast_context(device: torch.device) -> torch.autocast:
    """bf16 autocast on a GPU; a disabled context elsewhere (bf16 on a CPU is slower than fp32)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def embed_pixels(
    encode: Callable[[torch.Tensor], torch.Tensor],
    pixels: np.ndarray,
    positions: np.ndarray,
    normalization: ImageNormalization,
    device: torch.device,
    batch_size: int = 256,
    description: str = "embedding",
) -> np.ndarray:
    """Embed the uint8 (N, H, W, 3) images at ``positions`` with ``encode``; return float32 (len, D).

    Reads the images batch by batch, so ``pixels`` may be a memory map larger
    than RAM.
    """
    chunks = []
    starts = range(0, len(positions), batch_size)
    for start in tqdm(starts, desc=description, leave=False, disable=len(starts) < 4):
        batch_positions = positions[start : start + batch_size]
        batch = torch.from_numpy(np.ascontiguousarray(pixels[batch_positions])).to(device)
        with autocast_context(device):
            features = encode(normalize(to_float_nchw(batch), normalization))
        chunks.append(features.float().cpu().numpy())
    if not chunks:
        raise ValueError("no images to embed: the split is empty")
    return np.concatenate(chunks).astype(np.float32)


@torch.no_grad()
def embed_prompts(model: TriModalCLIP, device: torch.device) -> np.ndarray:
    """Embed every class prompt of the model's schema; return float32 (C, D)."""
    with autocast_context(device):
        return model.encode_prompts().float().cpu().numpy()


@torch.no_grad()
def embed_symbol_bank(
    model: TriModalCLIP, bank_images: np.ndarray, normalization: ImageNormalization, device: torch.device
) -> np.ndarray:
    """Embed all variants of each class symbol and return their re-normalised mean per class, (C, D)."""
    n_classes, n_variants = bank_images.shape[:2]
    flat = bank_images.reshape(n_classes * n_variants, *bank_images.shape[2:])
    features = embed_pixels(
        model.encode_symbol, flat, np.arange(len(flat)), normalization, device, description="symbols"
    )
    mean = features.reshape(n_classes, n_variants, -1).mean(axis=1)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


def save_embeddings(
    path: str | Path,
    ids: np.ndarray,
    labels: np.ndarray,
    embeddings: np.ndarray,
    schema: ClassSchema,
    text_embeddings: np.ndarray | None = None,
    symbol_embeddings: np.ndarray | None = None,
) -> Path:
    """Write image embeddings with their ids and labels, plus class embeddings, to one .npz file.

    The file is written under a temporary name and renamed, so a reader never
    sees half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "ids": np.asarray(ids, dtype=str),
        "labels": np.asarray(labels, dtype=np.int64),
        "embeddings": np.asarray(embeddings, dtype=np.float32),
        "class_names": np.asarray(schema.names, dtype=str),
    }
    if text_embeddings is not None:
        arrays["text_embeddings"] = np.asarray(text_embeddings, dtype=np.float32)
    if symbol_embeddings is not None:
        arrays["symbol_embeddings"] = np.asarray(symbol_embeddings, dtype=np.float32)
    temporary = path.with_name(path.name + ".tmp.npz")
    np.savez(temporary, **arrays)
    temporary.replace(path)
    logger.info("wrote %d embeddings of width %d to %s", len(ids), embeddings.shape[1], path)
    return path


def load_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    """Read a file written by :func:`save_embeddings` into a dict of arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no embeddings at {path}; run training (or embedding) for this run first")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
