"""Finished runs: load the trained model of a run directory and embed galaxies with it."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch

from galaxalign.data.dataset import GalaxyDataset
from galaxalign.data.readers import read_dataset
from galaxalign.embed import (
    EmbeddingSet,
    embed_prompts,
    embed_symbol_draws,
    finished_embedding_set,
    write_embedding_set,
)
from galaxalign.models import ImageNormalization, TriModalCLIP, build_model, resolve_model_name
from galaxalign.schema import ClassSchema
from galaxalign.symbols import SymbolBank
from galaxalign.train.config import TrainConfig
from galaxalign.train.rundir import RunDirectory, RunDirectoryError
from galaxalign.train.trainer import cache_for_config, prepare_data, resolve_device

logger = logging.getLogger(__name__)


@dataclass
class FinishedRun:
    """A run directory whose newest stage finished, with its model loaded from that stage's checkpoint.

    ``stage`` is the stage whose final checkpoint ``checkpoint`` holds, and
    ``step`` the optimizer step it was written at. ``model`` is in eval mode on
    ``device``; ``normalization`` is the pixel normalisation it was trained with.
    """

    run: RunDirectory
    config: TrainConfig
    schema: ClassSchema
    stage: int
    checkpoint: Path
    step: int
    model: TriModalCLIP
    normalization: ImageNormalization
    device: torch.device

    @property
    def path(self) -> Path:
        return self.run.path


def _weights_tag(model: str, pretrained: str | None) -> tuple[str, str | None]:
    """Return the open_clip model name and the registry tag a run's weights came from, None for no tag.

    A local weights file or random initialisation has no tag.
    """
    model_name, default_weights = resolve_model_name(model)
    tag = default_weights if pretrained == "default" else pretrained
    if not tag or tag not in open_clip.list_pretrained_tags_by_model(model_name):
        return model_name, None
    return model_name, tag


def weights_normalization(model: str, pretrained: str | None) -> ImageNormalization | None:
    """Return the pixel normalisation of an open_clip weights tag, or None when it has no recorded one.

    A finished run is rebuilt without downloading its pre-trained weights,
    because its checkpoint contains all weights. The normalisation that came
    with those weights is therefore looked up by tag.
    """
    model_name, tag = _weights_tag(model, pretrained)
    if tag is None:
        return None
    config = open_clip.get_pretrained_cfg(model_name, tag)
    if "mean" not in config or "std" not in config:
        return None
    return ImageNormalization(mean=tuple(config["mean"]), std=tuple(config["std"]))  # type: ignore[arg-type]


def finished_stage(run: RunDirectory) -> tuple[int, Path]:
    """Return the newest finished stage of ``run`` and its final checkpoint.

    Raises :class:`RunDirectoryError` when the folder is not a galaxalign run
    or no stage has finished, saying how to finish it.
    """
    if run.path.is_file():
        raise RunDirectoryError(f"run_dir {run.path} is a file; pass the folder of a training run")
    if not run.path.is_dir():
        raise RunDirectoryError(f"run_dir {run.path} does not exist; pass the folder of a training run")
    if not run.config_path.is_file():
        raise RunDirectoryError(
            f"run_dir {run.path} contains no config.json, so it is not a galaxalign training run; "
            "pass the run_dir that train.ipynb or galaxalign.train() wrote"
        )
    for stage in (2, 1):
        status = run.stage_status(stage)
        if status.latest is None:
            continue
        if status.complete:
            return stage, status.latest
        raise RunDirectoryError(
            f"run_dir {run.path}: stage {stage} has not finished (newest checkpoint {status.latest.name} "
            "is mid-stage). Finish training by running train.ipynb again with this run_dir, then evaluate "
            "or explore it"
        )
    raise RunDirectoryError(
        f"run_dir {run.path} contains no checkpoint of a finished stage; train it with train.ipynb "
        "(same run_dir) before evaluating or exploring it"
    )


def load_run(run_dir: str | Path, device: str = "auto") -> FinishedRun:
    """Load the model of the newest finished stage of a run directory, ready to embed galaxies.

    The model is rebuilt from ``config.json`` without downloading weights,
    because the checkpoint contains all of them. ``device`` is "auto", "cpu",
    "cuda" or "mps".
    """
    if run_dir is None or not isinstance(run_dir, (str, Path)):
        raise TypeError(f"run_dir must be the path of a training run's folder, got {run_dir!r}")
    run = RunDirectory(run_dir)
    stage, checkpoint = finished_stage(run)
    target = resolve_device(device)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config, schema = _checked_config_and_schema(run, state, checkpoint)

    with _quiet_open_clip_weights_warning():
        model, normalization = build_model(
            config.model,
            schema,
            pretrained=None,
            image_size=config.image_size,
            quick_gelu=_resolved_quick_gelu(config),
        )
    normalization = weights_normalization(config.model, config.pretrained) or normalization
    if stage == 2 and config.uses_symbols:
        model.split_symbol_tower()
    model.load_state_dict(state["model"])
    model.to(target).eval()
    logger.info("loaded stage %d of %s from %s (step %d)", stage, run.path, checkpoint.name, state["step"])
    return FinishedRun(
        run=run,
        config=config,
        schema=schema,
        stage=stage,
        checkpoint=checkpoint,
        step=int(state["step"]),
        model=model,
        normalization=normalization,
        device=target,
    )


def _checked_config_and_schema(
    run: RunDirectory, state: dict[str, Any], checkpoint: Path
) -> tuple[TrainConfig, ClassSchema]:
    """Read config.json and schema.json, and check them against what the checkpoint recorded.

    The checkpoint records what the weights were trained with, so an edited
    config.json or schema.json is an error rather than a silent change of
    image size, classes or prompts.
    """
    for path in (run.config_path, run.schema_path):
        if not path.is_file():
            raise RunDirectoryError(f"{path} is missing, so the run is incomplete; train it again")
    try:
        config = TrainConfig.from_dict(run.read_config())
        schema = ClassSchema.load(run.schema_path)
    except (ValueError, KeyError, TypeError) as error:
        raise RunDirectoryError(
            f"cannot read {run.config_path} or {run.schema_path} ({type(error).__name__}: {error}); "
            "restore the files the run wrote, or train the run again"
        ) from error

    differences = config.differences(state.get("config", {}))
    if differences:
        listed = "; ".join(
            f"{key}: {new!r} in config.json, {old!r} in the checkpoint"
            for key, (old, new) in differences.items()
        )
        raise RunDirectoryError(
            f"{run.config_path} does not match {checkpoint.name} ({listed}); "
            "restore config.json as the run wrote it"
        )
    recorded = state.get("schema")
    if recorded is not None and ClassSchema.from_dict(recorded).to_dict() != schema.to_dict():
        raise RunDirectoryError(
            f"{run.schema_path} does not match the classes or prompts that {checkpoint.name} was trained "
            "with; restore schema.json as the run wrote it"
        )
    return config, schema


@contextlib.contextmanager
def _quiet_open_clip_weights_warning() -> Iterator[None]:
    """Hide open_clip's "No pretrained weights loaded" warning, because the checkpoint's weights load next."""

    def keep(record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _resolved_quick_gelu(config: TrainConfig) -> bool:
    """Return the activation the run trained with, which its weights tag decided when not given."""
    if config.quick_gelu is not None:
        return bool(config.quick_gelu)
    model_name, tag = _weights_tag(config.model, config.pretrained)
    if tag is None:
        return False
    return bool(open_clip.get_pretrained_cfg(model_name, tag).get("quick_gelu", False))


SPLITS = ("train", "val", "test", "all")

# Jittered drawings of each class symbol embedded with every split. Evaluation averages a
# seeded choice of them, so "symbol_draws" can be at most this number.
SYMBOL_VARIANTS = 32


@dataclass
class RunImages:
    """Decoded galaxies for a finished run: its own dataset and split, or another catalog with its classes.

    ``pixels`` is the (M, S, S, 3) uint8 decoded-image cache at the run's
    image size and ``pixel_rows[i]`` is the cache row of galaxy ``i`` of
    ``dataset``. ``splits`` maps "train", "val", "test" and "all" to positions
    in ``dataset``; a foreign catalog has "all" only. ``foreign`` is True for a
    dataset other than the one the run trained on.
    """

    dataset: GalaxyDataset
    pixels: np.ndarray
    pixel_rows: np.ndarray
    splits: dict[str, np.ndarray]
    foreign: bool

    def positions(self, split: str) -> np.ndarray:
        if split not in self.splits:
            available = ", ".join(self.splits)
            hint = " (another catalog is evaluated whole: use split='all')" if self.foreign else ""
            raise ValueError(
                f"unknown split {split!r} for {self.dataset.source}; use one of {available}{hint}"
            )
        return self.splits[split]

    @functools.cached_property
    def _position_of(self) -> dict[str, int]:
        return {object_id: i for i, object_id in enumerate(self.dataset.ids)}

    def thumbnails(self, ids: Sequence[str]) -> np.ndarray:
        """Return the cached images of the galaxies with these object ids, (len(ids), S, S, 3) uint8."""
        position_of = self._position_of
        missing = [object_id for object_id in ids if object_id not in position_of]
        if missing:
            raise KeyError(f"object ids {missing[:5]} are not in {self.dataset.source}")
        positions = np.array([position_of[object_id] for object_id in ids], dtype=np.int64)
        return np.asarray(self.pixels[self.pixel_rows[positions]])


def load_run_images(
    run: FinishedRun, dataset: str | None = None, data_dir: str | Path | None = None
) -> RunImages:
    """Read and cache the galaxies a finished run is evaluated on.

    With ``dataset=None`` these are the run's own galaxies with its saved
    split. Otherwise ``dataset`` and ``data_dir`` name another data set, as
    :func:`galaxalign.data.read_dataset` takes them, whose class names must be
    the run's, in the same order; all its galaxies form the "all" split.
    """
    config = run.config
    if dataset is None:
        data = prepare_data(config, run.run, reuse_split=True)
        splits = {"train": data.train, "val": data.val, "test": data.test}
        splits["all"] = np.arange(len(data.dataset))
        return RunImages(data.dataset, data.pixels, data.pixel_rows, splits, foreign=False)

    other = read_dataset(dataset, data_dir, download=config.download)
    if list(other.schema.names) != list(run.schema.names):
        raise ValueError(
            f"{other.source} has the classes {list(other.schema.names)} but run {run.path} was trained on "
            f"{list(run.schema.names)}; evaluate on a catalog with the run's classes in its label order"
        )
    other, pixels, pixel_rows = cache_for_config(other, config)
    return RunImages(other, pixels, pixel_rows, {"all": np.arange(len(other))}, foreign=True)


def embed_run(
    run: FinishedRun,
    images: RunImages,
    split: str = "test",
    symbol_variants: int = SYMBOL_VARIANTS,
    chunk_size: int = 4096,
) -> EmbeddingSet:
    """Embed one split of ``images`` with the run's towers into the run directory, resuming where it stopped.

    Writes ``embeddings/<split>/`` for the run's own galaxies and
    ``embeddings/<dataset>-<split>/`` for another catalog: image embeddings
    with object ids and labels, the class prompts' embeddings, and
    ``symbol_variants`` drawings of each class symbol (seed 0) through the
    symbol tower. Everything after this step reads these files, not the model.
    """
    positions = images.positions(split)
    dataset = images.dataset
    source_classes = {"classes": list(run.schema.names), "prompts": list(run.schema.prompts)}
    source = {
        "checkpoint": run.checkpoint.name,
        "stage": run.stage,
        "step": run.step,
        "dataset": dataset.source,
        "split": split,
        "image_size": run.config.image_size,
        "crop_fraction": run.config.crop_fraction,
        "symbol_variants": symbol_variants if run.config.uses_symbols else 0,
        **source_classes,
    }
    folder = embedding_folder(run, images, split)
    finished = finished_embedding_set(folder, source, len(positions))
    if finished is not None:
        return finished

    model = run.model
    text = embed_prompts(model, run.device)
    symbol_draws = None
    if run.config.uses_symbols:
        bank = SymbolBank(run.schema, run.config.image_size, symbol_variants, seed=0)
        symbol_draws = embed_symbol_draws(model, bank.images, run.normalization, run.device)
    return write_embedding_set(
        folder,
        model.encode_image,
        images.pixels,
        images.pixel_rows[positions],
        dataset.ids[positions],
        dataset.labels[positions],
        run.normalization,
        run.device,
        run.schema.names,
        text,
        symbol_draws,
        source,
        chunk_size=chunk_size,
    )


def embedding_folder(run: FinishedRun, images: RunImages, split: str) -> Path:
    """Return the folder :func:`embed_run` writes one split of ``images`` to, whether or not it exists."""
    name = split if not images.foreign else f"{_folder_name(images.dataset.source)}-{split}"
    return run.run.embeddings_dir / name


def _folder_name(source: str) -> str:
    """Turn a dataset source (a name or a path) into a short folder name that differs between paths.

    Catalogs are often all named catalog.csv, so the name joins the parent
    folder, the file stem and a hash of the whole source.
    """
    path = Path(str(source).rstrip("/"))
    readable = "-".join(part for part in (path.parent.name, path.stem) if part) or "dataset"
    readable = "".join(c if c.isalnum() or c in "-_" else "_" for c in readable)[:40]
    digest = hashlib.sha1(str(source).encode()).hexdigest()[:8]
    return f"{readable}-{digest}"
