"""Embedding extraction: galaxy images, class prompts and symbols into vectors on disk."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    progress: bool = True,
) -> np.ndarray:
    """Embed the uint8 (N, H, W, 3) images at ``positions`` with ``encode``; return float32 (len, D).

    Reads the images batch by batch, so ``pixels`` may be a memory map larger
    than RAM.
    """
    chunks = []
    starts = range(0, len(positions), batch_size)
    for start in tqdm(starts, desc=description, leave=False, disable=not progress or len(starts) < 4):
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


def embed_symbol_draws(
    model: TriModalCLIP, bank_images: np.ndarray, normalization: ImageNormalization, device: torch.device
) -> np.ndarray:
    """Embed every drawing of each class symbol: uint8 (C, V, S, S, 3) in, float32 (C, V, D) out."""
    n_classes, n_variants = bank_images.shape[:2]
    flat = bank_images.reshape(n_classes * n_variants, *bank_images.shape[2:])
    features = embed_pixels(
        model.encode_symbol, flat, np.arange(len(flat)), normalization, device, description="symbols"
    )
    return features.reshape(n_classes, n_variants, -1)


def embed_symbol_bank(
    model: TriModalCLIP, bank_images: np.ndarray, normalization: ImageNormalization, device: torch.device
) -> np.ndarray:
    """Embed all variants of each class symbol and return their re-normalised mean per class, (C, D)."""
    mean = embed_symbol_draws(model, bank_images, normalization, device).mean(axis=1)
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


EMBEDDINGS_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass
class EmbeddingSet:
    """Embeddings of one set of galaxies, read from a folder written by :func:`write_embedding_set`.

    ``images`` is a read-only (N, D) float32 memory map of unit-length image
    embeddings in the row order of ``ids`` (object ids as str) and ``labels``
    (int64 class indices into ``class_names``). ``text`` is (C, D), one class
    prompt embedding per class, and ``symbol_draws`` is (C, V, D), V jittered
    symbol drawings per class, or None for a run trained without symbols.
    ``source`` records what produced the vectors (checkpoint, dataset, split).
    """

    path: Path
    ids: np.ndarray
    labels: np.ndarray
    images: np.ndarray
    class_names: list[str]
    text: np.ndarray
    symbol_draws: np.ndarray | None
    source: dict[str, Any]

    def __len__(self) -> int:
        return len(self.ids)

    def symbols(self, draws: int | None = None, seed: int = 0) -> np.ndarray:
        """Return one symbol embedding per class: the re-normalised mean of ``draws`` drawings, (C, D).

        ``draws=None`` averages all stored drawings. Otherwise each class takes
        ``draws`` drawings chosen at random with ``seed``, so several seeds give
        the spread of symbol classification over drawings.
        """
        if self.symbol_draws is None:
            raise ValueError(
                f"{self.path} has no symbol embeddings because its run was trained without symbols "
                "(symbols='none'); use the text or image embeddings"
            )
        n_stored = self.symbol_draws.shape[1]
        if draws is None:
            chosen = self.symbol_draws
        else:
            if not 1 <= draws <= n_stored:
                raise ValueError(f"draws must be between 1 and {n_stored} (the drawings stored), got {draws}")
            generator = np.random.default_rng(seed)
            picks = np.stack(
                [generator.choice(n_stored, size=draws, replace=False) for _ in self.class_names]
            )
            chosen = np.take_along_axis(self.symbol_draws, picks[:, :, None], axis=1)
        mean = chosen.mean(axis=1)
        return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


def write_embedding_set(
    folder: str | Path,
    encode: Callable[[torch.Tensor], torch.Tensor],
    pixels: np.ndarray,
    rows: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    normalization: ImageNormalization,
    device: torch.device,
    class_names: Sequence[str],
    text: np.ndarray,
    symbol_draws: np.ndarray | None,
    source: dict[str, Any],
    chunk_size: int = 4096,
    batch_size: int = 256,
) -> EmbeddingSet:
    """Embed the images at ``rows`` of ``pixels`` chunk by chunk into ``folder`` and return the set.

    Image embeddings go to ``images.npy`` through a memory map, so the set may
    be larger than RAM. After each chunk of ``chunk_size`` galaxies the
    manifest records how many rows are done, and a later call with the same
    ``source`` (checkpoint, dataset, split) and ids continues from there. A
    folder from another source is rebuilt, because its vectors no longer
    belong to the model. ``ids[i]`` and ``labels[i]`` belong to ``rows[i]``.
    """
    folder = Path(folder)
    count = len(rows)
    if count == 0:
        raise ValueError(f"no galaxies to embed into {folder}: the split is empty")
    if len(ids) != count or len(labels) != count:
        raise ValueError(
            f"rows, ids and labels must have one entry per galaxy, got {count}, {len(ids)}, {len(labels)}"
        )
    manifest_path = folder / MANIFEST_NAME
    images_path = folder / "images.npy"
    partial_path = folder / "images.partial.npy"

    finished = finished_embedding_set(folder, source, count)
    if finished is not None:
        return finished
    manifest = _read_manifest(manifest_path)
    source = json.loads(json.dumps(source))
    if manifest is not None and (manifest.get("source") != source or manifest.get("count") != count):
        logger.warning("embeddings in %s belong to another checkpoint or dataset; embedding again", folder)
        manifest = None

    folder.mkdir(parents=True, exist_ok=True)
    ids = np.asarray(ids, dtype=str)
    labels = np.asarray(labels, dtype=np.int64)
    done = 0
    if manifest is not None and partial_path.is_file():
        stored_ids = np.load(folder / "ids.npy", allow_pickle=False)
        if np.array_equal(stored_ids, ids):
            done = int(manifest.get("rows_done", 0))
    if done == 0:
        for stale in (images_path, partial_path):
            stale.unlink(missing_ok=True)
        np.save(folder / "ids.npy", ids)
        np.save(folder / "labels.npy", labels)
        np.save(folder / "text.npy", np.asarray(text, dtype=np.float32))
        if symbol_draws is not None:
            np.save(folder / "symbol_draws.npy", np.asarray(symbol_draws, dtype=np.float32))
        else:
            (folder / "symbol_draws.npy").unlink(missing_ok=True)
    else:
        logger.info("resuming the embeddings in %s at galaxy %d of %d", folder, done, count)

    manifest = {
        "format_version": EMBEDDINGS_FORMAT_VERSION,
        "source": source,
        "count": count,
        "class_names": list(class_names),
        "rows_done": done,
        "complete": False,
    }
    dim = int(np.asarray(text).shape[1])
    if done == 0:
        output = np.lib.format.open_memmap(partial_path, mode="w+", dtype=np.float32, shape=(count, dim))
    else:
        output = np.lib.format.open_memmap(partial_path, mode="r+")

    progress = tqdm(total=count, initial=done, desc=f"embedding {folder.name}", unit="galaxy", leave=False)
    try:
        for start in range(done, count, chunk_size):
            stop = min(start + chunk_size, count)
            output[start:stop] = embed_pixels(
                encode, pixels, rows[start:stop], normalization, device, batch_size=batch_size, progress=False
            )
            output.flush()
            manifest["rows_done"] = stop
            _write_manifest(manifest_path, manifest)
            progress.update(stop - start)
    finally:
        progress.close()
    del output
    partial_path.replace(images_path)
    manifest["complete"] = True
    _write_manifest(manifest_path, manifest)
    logger.info("wrote %d embeddings of width %d to %s", count, dim, folder)
    return read_embedding_set(folder)


def finished_embedding_set(folder: str | Path, source: dict[str, Any], count: int) -> EmbeddingSet | None:
    """Return the complete set in ``folder`` when it was written from ``source`` for ``count`` galaxies."""
    folder = Path(folder)
    manifest = _read_manifest(folder / MANIFEST_NAME)
    if manifest is None or not manifest.get("complete") or not (folder / "images.npy").is_file():
        return None
    if manifest.get("source") != json.loads(json.dumps(source)) or manifest.get("count") != count:
        return None
    logger.info("reusing the %d embeddings in %s", count, folder)
    return read_embedding_set(folder)


def read_embedding_set(folder: str | Path) -> EmbeddingSet:
    """Open a folder written by :func:`write_embedding_set`; the image embeddings stay on disk."""
    folder = Path(folder)
    manifest = _read_manifest(folder / MANIFEST_NAME)
    if manifest is None:
        state = "is unreadable or of another format" if (folder / MANIFEST_NAME).exists() else "is missing"
        raise FileNotFoundError(
            f"no embeddings in {folder} ({MANIFEST_NAME} {state}); embed the split first, for example "
            "with evaluate.ipynb or galaxalign.embed_run()"
        )
    if not manifest.get("complete"):
        raise ValueError(
            f"the embeddings in {folder} are incomplete ({manifest.get('rows_done')} of "
            f"{manifest.get('count')} galaxies); embed the split again to finish them"
        )
    damaged = f"delete {folder} and evaluate (or embed) again to recompute it"
    symbol_path = folder / "symbol_draws.npy"
    try:
        embedding_set = EmbeddingSet(
            path=folder,
            ids=np.load(folder / "ids.npy", allow_pickle=False),
            labels=np.load(folder / "labels.npy", allow_pickle=False),
            images=np.load(folder / "images.npy", mmap_mode="r", allow_pickle=False),
            class_names=list(manifest["class_names"]),
            text=np.load(folder / "text.npy", allow_pickle=False),
            symbol_draws=np.load(symbol_path, allow_pickle=False) if symbol_path.is_file() else None,
            source=manifest["source"],
        )
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"the embeddings in {folder} are damaged ({error}); {damaged}") from error

    count = manifest["count"]
    shapes = {
        "ids.npy": embedding_set.ids.shape[0],
        "labels.npy": embedding_set.labels.shape[0],
        "images.npy": embedding_set.images.shape[0],
    }
    wrong = {name: rows for name, rows in shapes.items() if rows != count}
    if wrong:
        raise ValueError(f"the embeddings in {folder} are damaged: {wrong} rows, not {count}; {damaged}")
    return embedding_set


def _read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        logger.warning("ignoring the unreadable embeddings manifest %s", path)
        return None
    if not isinstance(manifest, dict) or manifest.get("format_version") != EMBEDDINGS_FORMAT_VERSION:
        return None
    return manifest


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    temporary.replace(path)
