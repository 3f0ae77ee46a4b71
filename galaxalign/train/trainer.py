"""The two-stage tri-modal trainer: warm-up on image–text and symbol–text, then all three pairs."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from galaxalign.classify import zero_shot_predict
from galaxalign.data import GalaxyDataset, Split, cache_images, read_dataset, stratified_split
from galaxalign.data.augment import mirror_labels, normalize, sample_affine, to_float_nchw, warp_affine
from galaxalign.embed import (
    autocast_context,
    embed_pixels,
    embed_prompts,
    embed_symbol_bank,
    save_embeddings,
)
from galaxalign.losses import stage1_loss, stage2_loss
from galaxalign.metrics import classification_metrics, retrieval_metrics
from galaxalign.models import TriModalCLIP, build_model
from galaxalign.schema import ClassSchema, MorphologyClass
from galaxalign.symbols import SymbolBank, save_symbol_sheet
from galaxalign.train.config import TrainConfig
from galaxalign.train.distributed import setup_distributed
from galaxalign.train.loader import BatchPrefetcher, read_batch
from galaxalign.train.rundir import (
    EVALUATE_ONLY,
    NO_SPACE_ERRNOS,
    RunDirectory,
    RunDirectoryError,
    atomic_torch_save,
    atomic_write_text,
)
from galaxalign.train.signals import StopRequest

logger = logging.getLogger(__name__)

SYMBOL_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def resolve_device(name: str) -> torch.device:
    """Turn "auto" into the best available device (CUDA, then Apple MPS, then CPU)."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={name!r} was requested but CUDA is not available; use 'auto' or 'cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class PreparedData:
    """A dataset with its decoded-image cache and split, ready for training.

    ``pixels`` is the (N, S, S, 3) uint8 cache, and ``pixel_rows[i]`` is the
    cache row of galaxy ``i`` of ``dataset``. ``train``, ``val`` and ``test``
    are positions in ``dataset``.
    """

    dataset: GalaxyDataset
    pixels: np.ndarray
    pixel_rows: np.ndarray
    split: Split
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def rows(self, positions: np.ndarray) -> np.ndarray:
        return self.pixel_rows[positions]


def cache_for_config(
    dataset: GalaxyDataset, config: TrainConfig
) -> tuple[GalaxyDataset, np.ndarray, np.ndarray]:
    """Cache ``dataset`` at the run's image size and crop; return it without unreadable galaxies.

    Returns the dataset (a subset when ``skip_unreadable`` left images out),
    the (M, S, S, 3) uint8 cache and each galaxy's row in it.
    """
    cached = cache_images(
        dataset,
        size=config.image_size,
        crop_fraction=config.crop_fraction,
        cache_dir=config.cache_dir,
        skip_unreadable=config.skip_unreadable,
    )
    pixel_rows = np.asarray(cached.kept, dtype=np.int64)
    if len(pixel_rows) < len(dataset):
        logger.warning("left out %d unreadable images of %s", len(dataset) - len(pixel_rows), dataset.source)
        dataset = dataset.subset(pixel_rows)
    return dataset, cached.array, pixel_rows


def prepare_data(config: TrainConfig, run: RunDirectory, reuse_split: bool = True) -> PreparedData:
    """Read the dataset, build or reuse the decoded-image cache, and load or draw the split.

    A split already in the run directory is reused when ``reuse_split`` is set,
    after checking that it covers exactly the galaxies read now. A new split is
    returned unsaved: the trainer writes it once the whole run has been checked.
    """
    # A user who skips unreadable images expects missing ones skipped too.
    options = {"skip_missing": True} if config.dataset == "catalog" and config.skip_unreadable else {}
    dataset = read_dataset(config.dataset, config.data_dir, download=config.download, **options)
    logger.info("read %d galaxies from %s: %s", len(dataset), dataset.source, dataset.class_counts())

    dataset, pixels, pixel_rows = cache_for_config(dataset, config)

    if reuse_split and run.split_path.exists():
        split = Split.load(run.split_path)
        check_split_matches(split, dataset, run)
        logger.info("reusing the split in %s", run.split_path)
    else:
        split = stratified_split(
            dataset, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed
        )
    train, val, test = split.indices(dataset)
    logger.info("split: %d train, %d validation, %d test galaxies", len(train), len(val), len(test))
    check_split_sizes(dataset, train, test, config)
    return PreparedData(dataset, pixels, pixel_rows, split, train, val, test)


def check_split_matches(split: Split, dataset: GalaxyDataset, run: RunDirectory) -> None:
    """Raise unless the saved split covers exactly the galaxies of ``dataset``."""
    saved = set(split.train) | set(split.val) | set(split.test)
    current = set(dataset.ids.tolist())
    if saved == current:
        return
    added, removed = sorted(current - saved), sorted(saved - current)
    raise RunDirectoryError(
        f"the data changed since {run.split_path} was written: {len(added)} galaxies added "
        f"(e.g. {added[:3]}) and {len(removed)} removed (e.g. {removed[:3]}). A run must keep its "
        "galaxies; use a new run_dir, or pass overwrite=True to start this run over"
    )


def check_split_sizes(
    dataset: GalaxyDataset, train: np.ndarray, test: np.ndarray, config: TrainConfig
) -> None:
    """Raise before any training when the split leaves too few galaxies to train or to score."""
    if len(train) < 2:
        raise ValueError(f"the training split of {dataset.source} has {len(train)} galaxies; need at least 2")
    if len(test) == 0:
        raise ValueError(
            f"the test split of {dataset.source} is empty with test_fraction={config.test_fraction} "
            f"and classes of {sorted(set(dataset.class_counts().values()))} galaxies; raise "
            "test_fraction or add galaxies"
        )
    test_counts = np.bincount(dataset.labels[test])
    if test_counts.max() < 2:
        raise ValueError(
            f"no class has two galaxies in the test split of {dataset.source} ({len(test)} galaxies), "
            f"so similarity search cannot be scored; raise test_fraction (now {config.test_fraction}) "
            "or add galaxies"
        )


def schema_with_symbols(schema: ClassSchema, symbols: str) -> ClassSchema:
    """Return ``schema`` with each class's symbol taken from a folder of images, when one is given."""
    if symbols in ("builtin", "none"):
        return schema
    folder = Path(symbols)
    classes = []
    for c in schema.classes:
        matches = [folder / f"{c.name}{suffix}" for suffix in SYMBOL_IMAGE_SUFFIXES]
        found = [m for m in matches if m.is_file()]
        if not found:
            raise FileNotFoundError(
                f"no symbol image for class {c.name!r} in {folder}; add {c.name}.png "
                "(or set symbols='builtin' to use the drawn symbols)"
            )
        classes.append(MorphologyClass(c.name, c.description, str(found[0]), c.prompt))
    return ClassSchema(schema.name, tuple(classes), schema.mirror)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float) -> Any:
    """Linear warm-up to the base learning rate, then cosine decay to zero at ``total_steps``."""
    warmup = max(1, int(round(total_steps * warmup_fraction))) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with no weight decay on gains, biases and the logit scale (parameters with < 2 dims)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    try:
        # The fused kernel is about 5x faster than the default on a CPU (measured on the
        # small preset, 19 M parameters, most of them in the token embedding).
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    except RuntimeError:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


# Consecutive non-finite steps after which on_nonfinite="skip" stops anyway. A run whose
# every step is non-finite has diverged, and skipping would only use up its time. The value
# is a judgement call, not a measured threshold.
MAX_CONSECUTIVE_SKIPS = 20


class NonFiniteError(FloatingPointError):
    """Raised when the loss or gradient of a training step is NaN or infinite."""


class RunWriteError(RunDirectoryError):
    """Raised when a checkpoint or log cannot be written to the run directory (full disk, lost mount)."""


class TrainingStopped(RuntimeError):
    """Raised after the checkpoint on SIGINT or SIGTERM when re-raising the signal did not end the process."""


@dataclass
class StagePosition:
    """How far a stage has come: what a checkpoint records to resume it exactly.

    ``epoch`` is the epoch in progress (from 1) and ``epoch_step`` the steps
    done in it. ``stage_step`` counts the steps of the stage. ``order`` is the
    epoch's shuffled order of the training split (indices into
    ``PreparedData.train``), drawn when the epoch starts, and ``losses`` are the
    losses of its steps so far.
    """

    epoch: int = 1
    epoch_step: int = 0
    stage_step: int = 0
    order: np.ndarray | None = None
    losses: list[float] = field(default_factory=list)


class TowerStep(nn.Module):
    """The forward pass of one training step through all towers, as one module for DistributedDataParallel.

    Takes normalised galaxy pixels (B, 3, S, S), the labels of the prompts to
    encode (P,) and symbol pixels (Q, 3, S, S) or None. Returns the three
    L2-normalised embeddings, with None for the symbols when there are none.
    """

    def __init__(self, model: TriModalCLIP) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, pixels: torch.Tensor, prompt_labels: torch.Tensor, symbols: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        image = self.model.encode_image(pixels)
        text = self.model.encode_prompts(prompt_labels)
        symbol = self.model.encode_symbol(symbols) if symbols is not None else None
        return image, text, symbol


def is_convnext(tower: nn.Module) -> bool:
    """Return whether an image tower is a ConvNeXt (a timm trunk inside open_clip)."""
    return "convnext" in type(getattr(tower, "trunk", tower)).__name__.lower()


def prepare_towers(
    model: TriModalCLIP, device: torch.device, grad_checkpointing: bool, channels_last: bool | None = None
) -> bool:
    """Switch on gradient checkpointing when asked, and the channels_last layout for ConvNeXt towers.

    ``channels_last=None`` uses it on CUDA devices only, where convolutions in
    that layout run faster. Returns whether image batches should be passed in
    channels_last layout. The symbol tower, a copy of the image tower, keeps
    both settings.
    """
    if grad_checkpointing:
        model.clip.set_grad_checkpointing(True)  # type: ignore[operator]
    if channels_last is None:
        # NOTE: channels_last on a GPU has not been run; a CPU test checks the layout keeps the result.
        channels_last = device.type == "cuda" and is_convnext(model.clip.visual)
    if channels_last:
        model.clip.visual.to(memory_format=torch.channels_last)  # type: ignore[union-attr]
    return channels_last


class Trainer:
    """Runs both stages of one run into a run directory, resuming an interrupted stage.

    Build it with :func:`train` or directly from a :class:`TrainConfig` and
    a run directory path, then call :meth:`run_all`. Under torchrun each
    process builds a Trainer; process 0 checks and writes the run directory
    first, and it alone writes checkpoints, logs and metrics.
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, overwrite: bool = False) -> None:
        self.config = config
        self.run = RunDirectory(run_dir)
        self.dist, self.device = setup_distributed(resolve_device(config.device))
        self.global_step = 0
        self._towers: nn.Module | None = None
        self._consecutive_skips = 0

        # Process 0 sets the run up first; the others then read what it wrote, or stop
        # with its error instead of waiting for it forever.
        if self.dist.is_main:
            try:
                self._set_up(overwrite, writes=True)
            except Exception as error:
                self.dist.broadcast_object(f"{type(error).__name__}: {error}")
                raise
            self.dist.broadcast_object(None)
        else:
            failure = self.dist.broadcast_object(None)
            if failure is not None:
                raise RuntimeError(
                    f"process 0 could not set up the run, so process {self.dist.rank} stops: {failure}"
                )
            self._set_up(overwrite=False, writes=False)
        self.last_checkpoint = self.run.latest_checkpoint()

    def _set_up(self, overwrite: bool, writes: bool) -> None:
        """Check the run directory and data, build the model, and write the first files if ``writes``."""
        config = self.config
        if writes:
            self.run.check_writable()
        self.first_stage = self.run.prepare(config, overwrite=overwrite)
        logger.info("run directory %s, device %s", self.run.path, self.device)

        # Everything that can fail on a user's data or parameters happens before the
        # run directory is written, so a corrected call can start the run again.
        torch.manual_seed(config.seed)
        self.data = prepare_data(config, self.run, reuse_split=not overwrite)
        self._check_batch_fits()
        self.schema = schema_with_symbols(self.data.dataset.schema, config.symbols)
        self.model, self.normalization = build_model(
            config.model,
            self.schema,
            pretrained=config.pretrained,
            image_size=config.image_size,
            quick_gelu=config.quick_gelu,
        )
        self.model.to(self.device)
        self.channels_last = prepare_towers(self.model, self.device, config.grad_checkpointing)
        bank = None
        if config.uses_symbols:
            bank = SymbolBank(self.schema, config.image_size, config.symbol_variants, config.seed)

        if writes:
            self.run.check_free_space(self._space_needed(), "the checkpoints this run still writes")
            self.run.start(config, overwrite=overwrite)
            if overwrite or not self.run.split_path.exists():
                self.data.split.save(self.run.split_path)
            self.schema.save(self.run.schema_path)
            self.run.remove_partial_checkpoints()
            if bank is not None:
                save_symbol_sheet(self.run.symbols_path, self.schema)
        self.symbol_images = bank.images if bank is not None else None
        self.symbol_bank = self._symbol_bank_tensor(bank)

    def _check_batch_fits(self) -> None:
        if not self.dist.enabled:
            return
        world_size, batch_size = self.dist.world_size, self.config.batch_size
        if batch_size % world_size:
            raise ValueError(
                f"batch_size {batch_size} is the batch over all {world_size} processes and must be a "
                f"multiple of {world_size}; choose e.g. {batch_size - batch_size % world_size or world_size}"
            )
        if len(self.data.train) < batch_size:
            raise ValueError(
                f"the training split has {len(self.data.train)} galaxies, fewer than batch_size "
                f"{batch_size}; under torchrun lower batch_size to at most {len(self.data.train)}"
            )

    def _checkpoint_bytes(self, stage: int) -> int:
        """Estimate one checkpoint's size: the weights plus AdamW's two moments per trainable weight."""
        weights = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        trainable = sum(p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad)
        if stage == 2 and self.config.uses_symbols and not self.model.has_symbol_tower:
            tower = sum(p.numel() * p.element_size() for p in self.model.clip.visual.parameters())
            weights, trainable = weights + tower, trainable + tower
        return weights + 2 * trainable

    def _space_needed(self) -> int:
        """Estimate the bytes the checkpoints still to write will add to the disk, temporary file included."""
        config = self.config
        if self.first_stage == EVALUATE_ONLY:
            return 0
        stages = [(1, config.epochs_stage1)] if self.first_stage == 1 else []
        if config.stage == 2:
            stages.append((2, config.epochs_stage2))
        steps_per_epoch = max(1, len(self.data.train) // config.batch_size)
        needed, largest = 0, 0
        for stage, epochs in stages:
            size = self._checkpoint_bytes(stage)
            steps = epochs * steps_per_epoch
            if config.max_steps:
                steps = min(steps, config.max_steps)
            written = epochs + (steps // config.checkpoint_every if config.checkpoint_every else 0)
            kept = min(config.keep_checkpoints, written) if config.keep_checkpoints else written
            existing = sum(path.stat().st_size for path in self.run.checkpoints(stage))
            needed += kept * size - existing
            largest = max(largest, size)
        return max(largest, needed + largest)

    def _symbol_bank_tensor(self, bank: SymbolBank | None) -> torch.Tensor | None:
        """Return the symbol variants normalised on the device, (C, V, 3, S, S)."""
        if bank is None:
            return None
        flat = torch.from_numpy(bank.images.reshape(-1, *bank.images.shape[2:])).to(self.device)
        pixels = normalize(to_float_nchw(flat), self.normalization)
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return pixels.reshape(*bank.images.shape[:2], *pixels.shape[1:])

    def run_all(self) -> dict[str, Any]:
        """Train the stages still to do, evaluate on the test split and return the final metrics.

        A stage whose newest checkpoint is not final resumes from it: weights,
        optimizer, learning-rate schedule, the epoch's shuffled order and the
        augmentation's random numbers continue where they stopped.
        """
        if self.first_stage == EVALUATE_ONLY:
            return self._evaluate_finished_stage()
        if self.first_stage == 2 and self.config.epochs_stage1 > 0 and not self.run.checkpoints(2):
            self._load_weights(self.run.checkpoints(1)[-1])
        if self.first_stage == 1:
            self.train_stage(1, self.config.epochs_stage1)
            if self.config.stage == 1:
                return self._finish_on_main(stage=1)
        if self.dist.is_main and self.run.metrics_path.exists():
            # The test metrics of a finished stage-1 run are kept beside the final ones.
            self.run.metrics_path.replace(self.run.path / "metrics_stage1.json")
        if self.config.uses_symbols:
            self.model.split_symbol_tower()
        self.train_stage(2, self.config.epochs_stage2)
        return self._finish_on_main(stage=2)

    def _finish_on_main(self, stage: int) -> dict[str, Any]:
        """Evaluate in process 0 and hand its metrics to every process."""
        metrics = self.finish(stage=stage) if self.dist.is_main else None
        return self.dist.broadcast_object(metrics)  # type: ignore[return-value]

    def _evaluate_finished_stage(self) -> dict[str, Any]:
        # prepare() chose this path only when the newest stage with checkpoints finished.
        stage = 2 if self.run.checkpoints(2) else 1
        if stage == 2 and self.config.uses_symbols:
            self.model.split_symbol_tower()
        self._load_weights(self.run.checkpoints(stage)[-1])
        logger.info("stage %d of this run finished without test metrics; evaluating it now", stage)
        return self._finish_on_main(stage=stage)

    def _load_weights(self, checkpoint: Path) -> None:
        state = torch.load(checkpoint, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.global_step = int(state["step"])
        logger.info("loaded the weights of %s", checkpoint)

    def _resume(
        self, checkpoint: Path, optimizer: torch.optim.Optimizer, scheduler: Any, generator: torch.Generator
    ) -> StagePosition:
        """Load a mid-stage checkpoint into the model, optimizer, schedule and random streams."""
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        resume = state.get("resume")
        if resume is None:
            raise RunDirectoryError(
                f"{checkpoint} was written by an earlier galaxalign that did not record where to resume; "
                "pass overwrite=True to start this run over, or choose a new run_dir"
            )
        differences = self.config.differences(state["config"])
        if differences:
            listed = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in differences.items())
            raise RunDirectoryError(
                f"{checkpoint} belongs to a run with other parameters ({listed}); pass the same parameters "
                "to resume it, overwrite=True to start over, or choose a new run_dir"
            )

        self.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        if self.device.type == "cuda" and resume.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(resume["cuda_rng"], self.device)
        self.global_step = int(state["step"])
        self.last_checkpoint = checkpoint

        order = resume["order"]
        position = StagePosition(
            epoch=int(resume["epoch"]),
            epoch_step=int(resume["epoch_step"]),
            stage_step=int(resume["stage_step"]),
            order=order.numpy() if order is not None else None,
            losses=[float(loss) for loss in resume["losses"]],
        )
        logger.info(
            "resumed stage %d from %s: epoch %d after %d of its steps, step %d of the run",
            state["stage"],
            checkpoint,
            position.epoch,
            position.epoch_step,
            self.global_step,
        )
        return position

    def _wrap_towers(self) -> nn.Module | None:
        """Wrap the towers in DistributedDataParallel under torchrun; None in a single process."""
        if not self.dist.enabled:
            return None
        device_ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(TowerStep(self.model), device_ids=device_ids)

    def train_stage(self, stage: int, epochs: int) -> None:
        """Train one stage for ``epochs`` epochs (or ``max_steps`` steps), resuming its newest checkpoint.

        Writes a checkpoint at the end of every epoch and every
        ``checkpoint_every`` steps. When SIGINT or SIGTERM arrives it writes one
        after the current step and raises the signal again (see :class:`StopRequest`).
        """
        config = self.config
        steps_per_epoch = max(1, len(self.data.train) // config.batch_size)
        total_steps = epochs * steps_per_epoch
        if config.max_steps:
            total_steps = min(total_steps, config.max_steps)
        peak_lr = config.lr if stage == 1 else config.lr * config.stage2_lr_scale
        optimizer = make_optimizer(self.model, peak_lr, config.weight_decay)
        scheduler = cosine_schedule(optimizer, total_steps, config.warmup_fraction)
        generator = torch.Generator().manual_seed(config.seed * 1000 + stage)

        position = StagePosition()
        status = self.run.stage_status(stage)
        if status.latest is not None and not status.complete:
            position = self._resume(status.latest, optimizer, scheduler, generator)
        if self.dist.is_main:
            self.run.trim_logs(stage, position.epoch - 1, self.global_step)
        with torch.no_grad():
            # A checkpoint or pre-trained weights may bring a logit scale outside the bounds.
            self.model.logit_scale.clamp_(0, math.log(config.max_logit_scale))
        self._towers = self._wrap_towers()
        logger.info(
            "stage %d: %d steps of batch %d (up to %d epochs)", stage, total_steps, config.batch_size, epochs
        )

        try:
            with StopRequest() as stop:
                self._train_epochs(
                    stage, epochs, position, optimizer, scheduler, generator, total_steps, stop
                )
        finally:
            self._towers = None

    def _train_epochs(
        self,
        stage: int,
        epochs: int,
        position: StagePosition,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generator: torch.Generator,
        total_steps: int,
        stop: StopRequest,
    ) -> None:
        steps_per_epoch = max(1, len(self.data.train) // self.config.batch_size)
        while position.epoch <= epochs:
            started = time.perf_counter()
            stopped = self._train_epoch(
                stage, position, optimizer, scheduler, generator, steps_per_epoch, total_steps, stop
            )
            if stopped:
                self._stop_with_checkpoint(stage, position, optimizer, scheduler, generator, stop)
            complete = position.epoch == epochs or position.stage_step >= total_steps
            if self.dist.is_main:
                self._log_epoch(stage, position, scheduler, started)
            position = StagePosition(epoch=position.epoch + 1, stage_step=position.stage_step)
            self.save_checkpoint(
                stage,
                position.epoch - 1,
                optimizer,
                scheduler,
                complete,
                position=position,
                generator=generator,
            )
            if self.dist.any(stop.requested, self.device):
                # The signal came during validation or the checkpoint; that checkpoint is the one to resume.
                self._stop_with_checkpoint(stage, None, optimizer, scheduler, generator, stop)
            if complete:
                break

    def _log_epoch(self, stage: int, position: StagePosition, scheduler: Any, started: float) -> None:
        validation = self.validate()
        record = {
            "stage": stage,
            "epoch": position.epoch,
            "step": self.global_step,
            "train_loss": float(np.nanmean(position.losses)) if position.losses else float("nan"),
            **{f"val_{k}": v for k, v in validation.items()},
            "logit_scale": float(self.model.logit_scale.detach().exp()),
            "lr": scheduler.get_last_lr()[0],
            "epoch_seconds": round(time.perf_counter() - started, 2),
        }
        self._write(self.run.metrics_log_path, self.run.append_jsonl, self.run.metrics_log_path, record)
        logger.info(
            "stage %d epoch %d: loss %.4f, validation accuracy %.3f, macro F1 %.3f",
            stage,
            position.epoch,
            record["train_loss"],
            validation["accuracy"],
            validation["macro_f1"],
        )

    def _stop_with_checkpoint(
        self,
        stage: int,
        position: StagePosition | None,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generator: torch.Generator,
        stop: StopRequest,
    ) -> None:
        """Write a checkpoint at ``position`` (None: the newest one is current), then re-raise the signal."""
        if position is not None:
            self.save_checkpoint(
                stage, position.epoch, optimizer, scheduler, False, position=position, generator=generator
            )
        # Every process waits for process 0's checkpoint before any of them exits.
        self.dist.barrier()
        logger.warning(
            "stopped at step %d; resume by running again with run_dir %s", self.global_step, self.run.path
        )
        stop.redeliver()
        raise TrainingStopped(
            f"training stopped at step {self.global_step} after writing {self.last_checkpoint}; run again "
            f"with run_dir {self.run.path} to resume"
        )

    def _train_epoch(
        self,
        stage: int,
        position: StagePosition,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generator: torch.Generator,
        steps_per_epoch: int,
        total_steps: int,
        stop: StopRequest,
    ) -> bool:
        """Run the rest of the epoch at ``position``, updating it; return True when a stop was requested."""
        config = self.config
        self.model.train()
        if position.order is None:
            position.order = torch.randperm(len(self.data.train), generator=generator).numpy()
        order = position.order
        n_steps = min(steps_per_epoch, position.epoch_step + total_steps - position.stage_step)
        batches = []
        for step in range(position.epoch_step, n_steps):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            if len(batch) < 2:
                break
            batches.append(np.sort(self.data.train[batch]))
        shares = [self.dist.shard(batch) for batch in batches]
        loader = BatchPrefetcher(
            self.data.pixels, self.data.pixel_rows, shares, pin_memory=self.device.type == "cuda"
        )

        progress = tqdm(
            total=n_steps,
            initial=position.epoch_step,
            desc=f"stage {stage} epoch {position.epoch}",
            leave=False,
            disable=not self.dist.is_main,
        )
        with progress:
            for batch, (_, images) in zip(batches, loader, strict=True):
                parts = self.train_step(stage, batch, optimizer, generator, images=images)
                scheduler.step()
                self.global_step += 1
                position.epoch_step += 1
                position.stage_step += 1
                position.losses.append(parts["loss"])
                parts["step"] = self.global_step
                parts["stage"] = stage
                if self.dist.is_main:
                    self._write(
                        self.run.steps_log_path, self.run.append_jsonl, self.run.steps_log_path, parts
                    )
                progress.update(1)
                progress.set_postfix(loss=f"{parts['loss']:.3f}")

                if self.dist.any(stop.requested, self.device):
                    return True
                every = config.checkpoint_every
                if every and self.global_step % every == 0 and position.epoch_step < n_steps:
                    self.save_checkpoint(
                        stage,
                        position.epoch,
                        optimizer,
                        scheduler,
                        False,
                        position=position,
                        generator=generator,
                    )
        return False

    def train_step(
        self,
        stage: int,
        positions: np.ndarray,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        images: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Take one optimizer step on the galaxies at ``positions`` and return the loss and its parts.

        ``positions`` is the whole batch over all processes; under torchrun this
        process embeds its share and the loss uses the embeddings gathered from
        all. ``images`` is this process's share as uint8 (b, S, S, 3) already
        read from the cache (read here when None). Each process encodes each
        distinct prompt of its share once, and each class's symbol once (one
        random variant per class per step); the embeddings are then expanded to
        one row per galaxy. A non-finite loss or gradient raises
        :class:`NonFiniteError`, or with ``on_nonfinite="skip"`` leaves the
        weights unchanged and returns ``skipped: True`` among the parts.
        """
        config = self.config
        labels, classes, per_galaxy, theta, variants = self._draw_batch(positions, generator)
        share = self.dist.shard(np.arange(len(positions)))
        if images is None:
            images = read_batch(self.data.pixels, self.data.rows(positions[share]))
        pixels = warp_affine(to_float_nchw(images.to(self.device, non_blocking=True)), theta[share])
        pixels = normalize(pixels, self.normalization)
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)

        # Positions in ``classes`` of the classes this process's share contains.
        share_classes, share_per_galaxy = torch.unique(per_galaxy[share], return_inverse=True)
        prompt_labels = classes[share_classes].to(self.device)
        symbols = None
        if self.symbol_bank is not None and variants is not None:
            symbols = self.symbol_bank[prompt_labels, variants[share_classes].to(self.device)]

        towers = self._towers if self._towers is not None else TowerStep(self.model)
        with autocast_context(self.device):
            # NOTE: bf16 autocast is on for CUDA only, and that path has not been run.
            image_features, text_features, symbol_features = towers(pixels, prompt_labels, symbols)
        index = share_per_galaxy.to(self.device)
        image_features = self.dist.gather(image_features.float())
        text_features = self.dist.gather(text_features.float()[index])
        if symbol_features is not None:
            symbol_features = self.dist.gather(symbol_features.float()[index])
        loss_fn = stage1_loss if stage == 1 else stage2_loss
        loss, parts = loss_fn(
            image_features,
            symbol_features,
            text_features,
            self.model.logit_scale.exp(),
            labels.to(self.device),
            kind=config.loss,  # type: ignore[arg-type]
        )

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gradients = [p for p in self.model.parameters() if p.grad is not None]
        if config.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(gradients, config.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in gradients])
        parts["loss"] = float(loss.detach())
        parts["grad_norm"] = float(grad_norm)
        finite = math.isfinite(parts["loss"]) and math.isfinite(parts["grad_norm"])
        if self.dist.any(not finite, self.device):
            self._handle_nonfinite(stage, parts)
            optimizer.zero_grad(set_to_none=True)
            parts["skipped"] = True
            return parts

        self._consecutive_skips = 0
        optimizer.step()
        with torch.no_grad():
            # CLIP keeps its temperature at or above 1/100 by clamping after each step.
            self.model.logit_scale.clamp_(0, math.log(config.max_logit_scale))
        return parts

    def _draw_batch(
        self, positions: np.ndarray, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Draw the random numbers of one step for the whole batch, the same in every process.

        Returns the labels after mirror flips (B,), the distinct classes (C,),
        each galaxy's index into them (B,), the affine matrices (B, 2, 3) and
        each class's symbol variant (C,) or None without symbols.
        """
        theta, flip = sample_affine(len(positions), generator, allow_flip=self.schema.mirror is not None)
        labels = mirror_labels(
            torch.from_numpy(self.data.dataset.labels[positions]), flip, self.schema.mirror
        )
        classes, per_galaxy = torch.unique(labels, return_inverse=True)
        variants = None
        if self.symbol_bank is not None:
            variants = torch.randint(self.symbol_bank.shape[1], (len(classes),), generator=generator)
        return labels, classes, per_galaxy, theta, variants

    def _handle_nonfinite(self, stage: int, parts: dict[str, float]) -> None:
        """Raise :class:`NonFiniteError`, or log and return when on_nonfinite="skip" allows another skip."""
        step = self.global_step + 1
        values = f"loss {parts['loss']}, gradient norm {parts['grad_norm']}"
        if self.config.on_nonfinite == "skip":
            self._consecutive_skips += 1
            if self._consecutive_skips <= MAX_CONSECUTIVE_SKIPS:
                logger.warning(
                    "non-finite step %d of stage %d (%s): skipped, weights unchanged", step, stage, values
                )
                return
            raise NonFiniteError(
                f"{MAX_CONSECUTIVE_SKIPS} steps in a row up to step {step} of stage {stage} were non-finite "
                f"({values}), so the run has diverged. The last good checkpoint is "
                f"{self.last_checkpoint or 'none yet'}; lower lr (now {self.config.lr}) and use a new run_dir"
            )
        raise NonFiniteError(
            f"non-finite {values} at step {step} of stage {stage}. The last good checkpoint is "
            f"{self.last_checkpoint or 'none yet (the run stopped before its first checkpoint)'}. Lower lr "
            f"(now {self.config.lr}) and start a new run_dir, check the input images, or run again with "
            "on_nonfinite='skip' to resume from that checkpoint and skip such steps"
        )

    def _write(self, path: Path, write: Callable[..., Any], *arguments: Any) -> Any:
        """Call ``write(*arguments)``, turning an OSError into a :class:`RunWriteError` about ``path``.

        The message names the error, the free space on the disk and the last
        good checkpoint to resume from.
        """
        try:
            return write(*arguments)
        except (OSError, RuntimeError) as raised:
            # torch.save reports a failed write as a RuntimeError of its zip writer, raised while
            # handling the OSError, and only the OSError names the cause.
            error = raised if isinstance(raised, OSError) else _os_error_behind(raised)
            if error is None:
                raise
            try:
                free = f"{self.run.free_bytes() / 1e9:.2f} GB free on that disk"
            except OSError:
                free = "free space unknown"
            full = error.errno in NO_SPACE_ERRNOS
            fix = "free some space or lower keep_checkpoints" if full else "fix the folder"
            raise RunWriteError(
                f"could not write {path}: {error.strerror or error} ({free}). The last good checkpoint is "
                f"{self.last_checkpoint or 'none yet'}; {fix}, then run again with run_dir {self.run.path} "
                "to resume from it"
            ) from raised

    def embed_split(self, positions: np.ndarray, description: str) -> np.ndarray:
        self.model.eval()
        return embed_pixels(
            self.model.encode_image,
            self.data.pixels,
            self.data.rows(positions),
            self.normalization,
            self.device,
            description=description,
        )

    def validate(self) -> dict[str, float]:
        """Zero-shot accuracy and macro F1 on the validation split (the training split if it is empty)."""
        positions = self.data.val if len(self.data.val) else self.data.train
        embeddings = self.embed_split(positions, "validation")
        predicted = zero_shot_predict(embeddings, embed_prompts(self.model, self.device))
        scores = classification_metrics(self.data.dataset.labels[positions], predicted, self.schema.names)
        return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}

    def save_checkpoint(
        self,
        stage: int,
        epoch: int,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        complete: bool,
        position: StagePosition | None = None,
        generator: torch.Generator | None = None,
    ) -> Path:
        """Write weights, optimizer state, config, schema, split and where to resume; plain data only.

        The file loads with ``torch.load(..., weights_only=True)``. It is written
        to a temporary name and renamed into place, so a crash keeps the previous
        checkpoint intact. With a ``position`` inside an epoch (its order drawn),
        the file is ``epoch_NNN_step_NNNNNNN.pt``; else ``epoch_NNN.pt``, and
        ``position`` is where the next epoch starts. ``position`` and
        ``generator`` are needed to resume the stage. Only process 0 writes;
        every process returns the path.
        """
        mid_epoch = position is not None and position.order is not None
        path = self.run.checkpoint_path(stage, epoch, step=self.global_step if mid_epoch else None)
        if not self.dist.is_main:
            return path
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "config": self.config.to_dict(),
            "schema": self.schema.to_dict(),
            "split": dataclasses.asdict(self.data.split),
            "stage": stage,
            "epoch": epoch,
            "step": self.global_step,
            "complete": complete,
        }
        if position is not None and generator is not None:
            state["resume"] = {
                "epoch": position.epoch,
                "epoch_step": position.epoch_step,
                "stage_step": position.stage_step,
                "order": torch.from_numpy(position.order) if position.order is not None else None,
                "losses": list(position.losses),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "world_size": self.dist.world_size,
            }
        self._write(path, atomic_torch_save, state, path)
        self.last_checkpoint = path
        self._write(path.parent, self.run.prune_checkpoints, stage, self.config.keep_checkpoints)
        return path

    def finish(self, stage: int) -> dict[str, Any]:
        """Embed the test split, write embeddings and ``metrics.json``, and return the metrics."""
        data = self.data
        test = data.test
        embeddings = self.embed_split(test, "test")
        text = embed_prompts(self.model, self.device)
        symbols = None
        if self.symbol_bank is not None:
            symbols = embed_symbol_bank(self.model, self.symbol_images, self.normalization, self.device)
        labels = data.dataset.labels[test]
        save_embeddings(
            self.run.embeddings_dir / "test.npz",
            data.dataset.ids[test],
            labels,
            embeddings,
            self.schema,
            text,
            symbols,
        )

        classification = classification_metrics(
            labels, zero_shot_predict(embeddings, text), self.schema.names
        )
        retrieval = retrieval_metrics(embeddings, labels, k=5)
        metrics: dict[str, Any] = {
            "accuracy": classification["accuracy"],
            "macro_f1": classification["macro_f1"],
            "map_at_5": retrieval["map_at_5"],
            "map": retrieval["map"],
            "n_test": int(len(test)),
            "stage": stage,
            "per_class": classification["per_class"],
            "confusion": classification["confusion"],
        }
        if symbols is not None:
            by_symbol = classification_metrics(
                labels, zero_shot_predict(embeddings, symbols), self.schema.names
            )
            metrics["symbol_accuracy"] = by_symbol["accuracy"]
            metrics["symbol_macro_f1"] = by_symbol["macro_f1"]
        atomic_write_text(self.run.metrics_path, json.dumps(metrics, indent=2) + "\n")
        logger.info(
            "test: accuracy %.3f, macro F1 %.3f, mAP@5 %.3f, mAP %.3f (%d galaxies); wrote %s",
            metrics["accuracy"],
            metrics["macro_f1"],
            metrics["map_at_5"],
            metrics["map"],
            len(test),
            self.run.metrics_path,
        )
        return metrics


def _os_error_behind(error: BaseException) -> OSError | None:
    """Return the first OSError among the exceptions ``error`` was raised from or while handling."""
    seen = error.__cause__ or error.__context__
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def train(
    config: TrainConfig | None = None,
    run_dir: str | Path = "runs/demo",
    overwrite: bool = False,
    **parameters: Any,
) -> dict[str, Any]:
    """Train a run end to end and return its test metrics.

    Pass a :class:`TrainConfig` or its fields as keyword arguments, e.g.
    ``train(dataset="demo", epochs_stage1=2, run_dir="runs/try")``. When
    ``run_dir`` contains an interrupted run with the same parameters, it
    resumes from the newest checkpoint.
    """
    if config is None:
        config = TrainConfig(**parameters)
    elif parameters:
        raise TypeError("pass either a TrainConfig or keyword parameters, not both")
    trainer = Trainer(config, run_dir, overwrite=overwrite)
    try:
        return trainer.run_all()
    finally:
        trainer.dist.close()
