"""The two-stage tri-modal trainer: warm-up on image–text and symbol–text, then all three pairs."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from galaxalign.classify import zero_shot_predict
from galaxalign.data import GalaxyDataset, Split, cache_images, read_dataset, stratified_split
from galaxalign.data.augment import normalize, random_affine, to_float_nchw
from galaxalign.embed import (
    autocast_context,
    embed_pixels,
    embed_prompts,
    embed_symbol_bank,
    save_embeddings,
)
from galaxalign.losses import stage1_loss, stage2_loss
from galaxalign.metrics import classification_metrics, retrieval_metrics
from galaxalign.models import build_model
from galaxalign.schema import ClassSchema, MorphologyClass
from galaxalign.symbols import SymbolBank, save_symbol_sheet
from galaxalign.train.config import TrainConfig
from galaxalign.train.rundir import (
    EVALUATE_ONLY,
    RunDirectory,
    RunDirectoryError,
    atomic_torch_save,
    atomic_write_text,
)

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

    cached = cache_images(
        dataset,
        size=config.image_size,
        crop_fraction=config.crop_fraction,
        cache_dir=config.cache_dir,
        skip_unreadable=config.skip_unreadable,
    )
    pixel_rows = np.asarray(cached.kept, dtype=np.int64)
    if len(pixel_rows) < len(dataset):
        logger.warning("left out %d unreadable images", len(dataset) - len(pixel_rows))
        dataset = dataset.subset(pixel_rows)

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
    return PreparedData(dataset, cached.array, pixel_rows, split, train, val, test)


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


class Trainer:
    """Runs both stages of one run into a run directory.

    Build it with :func:`train` or directly from a :class:`TrainConfig` and
    a run directory path, then call :meth:`run_all`.
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, overwrite: bool = False) -> None:
        self.config = config
        self.run = RunDirectory(run_dir)
        self.first_stage = self.run.prepare(config, overwrite=overwrite)
        self.device = resolve_device(config.device)
        logger.info("run directory %s, device %s", self.run.path, self.device)

        # Everything that can fail on a user's data or parameters happens before the
        # run directory is written, so a corrected call can start the run again.
        torch.manual_seed(config.seed)
        self.data = prepare_data(config, self.run, reuse_split=not overwrite)
        self.schema = schema_with_symbols(self.data.dataset.schema, config.symbols)
        self.model, self.normalization = build_model(
            config.model,
            self.schema,
            pretrained=config.pretrained,
            image_size=config.image_size,
            quick_gelu=config.quick_gelu,
        )
        self.model.to(self.device)
        bank = None
        if config.uses_symbols:
            bank = SymbolBank(self.schema, config.image_size, config.symbol_variants, config.seed)

        self.run.start(config, overwrite=overwrite)
        if overwrite or not self.run.split_path.exists():
            self.data.split.save(self.run.split_path)
        self.schema.save(self.run.schema_path)
        self.symbol_images = bank.images if bank is not None else None
        self.symbol_bank = self._symbol_bank_tensor(bank)
        self.global_step = 0

    def _symbol_bank_tensor(self, bank: SymbolBank | None) -> torch.Tensor | None:
        """Save the symbol sheet and return the symbol variants normalised on the device, (C, V, 3, S, S)."""
        if bank is None:
            return None
        save_symbol_sheet(self.run.symbols_path, self.schema)
        flat = torch.from_numpy(bank.images.reshape(-1, *bank.images.shape[2:])).to(self.device)
        pixels = normalize(to_float_nchw(flat), self.normalization)
        return pixels.reshape(*bank.images.shape[:2], *pixels.shape[1:])

    def run_all(self) -> dict[str, Any]:
        """Train the stages still to do, evaluate on the test split and return the final metrics."""
        if self.first_stage == EVALUATE_ONLY:
            return self._evaluate_finished_stage()
        if self.first_stage == 2 and self.config.epochs_stage1 > 0:
            self._load_weights(self.run.checkpoints(1)[-1])
        if self.first_stage == 1:
            self.train_stage(1, self.config.epochs_stage1)
            if self.config.stage == 1:
                return self.finish(stage=1)
        if self.run.metrics_path.exists():
            # The test metrics of a finished stage-1 run are kept beside the final ones.
            self.run.metrics_path.replace(self.run.path / "metrics_stage1.json")
        if self.config.uses_symbols:
            self.model.split_symbol_tower()
        self.train_stage(2, self.config.epochs_stage2)
        return self.finish(stage=2)

    def _evaluate_finished_stage(self) -> dict[str, Any]:
        # prepare() chose this path only when the newest stage with checkpoints finished.
        stage = 2 if self.run.checkpoints(2) else 1
        if stage == 2 and self.config.uses_symbols:
            self.model.split_symbol_tower()
        self._load_weights(self.run.checkpoints(stage)[-1])
        logger.info("stage %d of this run finished without test metrics; evaluating it now", stage)
        return self.finish(stage=stage)

    def _load_weights(self, checkpoint: Path) -> None:
        state = torch.load(checkpoint, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.global_step = int(state["step"])
        logger.info("loaded the weights of %s", checkpoint)

    def train_stage(self, stage: int, epochs: int) -> None:
        """Train one stage for ``epochs`` epochs (or ``max_steps`` steps), checkpointing every epoch."""
        config = self.config
        steps_per_epoch = len(self.data.train) // config.batch_size
        if steps_per_epoch == 0:
            steps_per_epoch = 1
        total_steps = epochs * steps_per_epoch
        if config.max_steps:
            total_steps = min(total_steps, config.max_steps)
        peak_lr = config.lr if stage == 1 else config.lr * config.stage2_lr_scale
        optimizer = make_optimizer(self.model, peak_lr, config.weight_decay)
        scheduler = cosine_schedule(optimizer, total_steps, config.warmup_fraction)
        generator = torch.Generator().manual_seed(config.seed * 1000 + stage)
        logger.info(
            "stage %d: %d steps of batch %d (up to %d epochs)", stage, total_steps, config.batch_size, epochs
        )

        stage_step = 0
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            losses = self._train_epoch(
                stage, epoch, optimizer, scheduler, generator, steps_per_epoch, total_steps - stage_step
            )
            stage_step += len(losses)
            complete = epoch == epochs or stage_step >= total_steps
            validation = self.validate()
            record = {
                "stage": stage,
                "epoch": epoch,
                "step": self.global_step,
                "train_loss": float(np.mean([loss["loss"] for loss in losses])) if losses else float("nan"),
                **{f"val_{k}": v for k, v in validation.items()},
                "logit_scale": float(self.model.logit_scale.detach().exp()),
                "lr": scheduler.get_last_lr()[0],
                "epoch_seconds": round(time.perf_counter() - started, 2),
            }
            self.run.append_jsonl(self.run.metrics_log_path, record)
            logger.info(
                "stage %d epoch %d: loss %.4f, validation accuracy %.3f, macro F1 %.3f",
                stage,
                epoch,
                record["train_loss"],
                validation["accuracy"],
                validation["macro_f1"],
            )
            self.save_checkpoint(stage, epoch, optimizer, scheduler, complete)
            if complete:
                break

    def _train_epoch(
        self,
        stage: int,
        epoch: int,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generator: torch.Generator,
        steps_per_epoch: int,
        steps_left: int,
    ) -> list[dict[str, float]]:
        config = self.config
        self.model.train()
        order = torch.randperm(len(self.data.train), generator=generator).numpy()
        n_steps = min(steps_per_epoch, steps_left)
        losses = []
        progress = tqdm(range(n_steps), desc=f"stage {stage} epoch {epoch}", leave=False)
        for step in progress:
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            if len(batch) < 2:
                break
            parts = self.train_step(stage, np.sort(self.data.train[batch]), optimizer, generator)
            scheduler.step()
            self.global_step += 1
            parts["step"] = self.global_step
            parts["stage"] = stage
            losses.append(parts)
            self.run.append_jsonl(self.run.steps_log_path, parts)
            progress.set_postfix(loss=f"{parts['loss']:.3f}")
        return losses

    def train_step(
        self, stage: int, positions: np.ndarray, optimizer: torch.optim.Optimizer, generator: torch.Generator
    ) -> dict[str, float]:
        """Take one optimizer step on the galaxies at ``positions`` and return the loss and its parts.

        Each distinct prompt in the batch is encoded once, and so is each
        class's symbol (one random variant per class per step). The embeddings
        are then expanded to one row per galaxy.
        """
        images = torch.from_numpy(np.ascontiguousarray(self.data.pixels[self.data.rows(positions)]))
        labels = torch.from_numpy(self.data.dataset.labels[positions])
        pixels, labels = random_affine(
            to_float_nchw(images.to(self.device)), labels, self.schema.mirror, generator
        )
        pixels = normalize(pixels, self.normalization)
        classes, per_galaxy = torch.unique(labels, return_inverse=True)
        classes, per_galaxy, labels = (
            classes.to(self.device),
            per_galaxy.to(self.device),
            labels.to(self.device),
        )

        with autocast_context(self.device):
            image_features = self.model.encode_image(pixels)
            text_features = self.model.encode_prompts(classes)[per_galaxy]
            symbol_features = None
            if self.symbol_bank is not None:
                variants = torch.randint(self.symbol_bank.shape[1], (len(classes),), generator=generator)
                symbols = self.symbol_bank[classes, variants.to(self.device)]
                symbol_features = self.model.encode_symbol(symbols)[per_galaxy]
            loss_fn = stage1_loss if stage == 1 else stage2_loss
            loss, parts = loss_fn(
                image_features.float(),
                symbol_features.float() if symbol_features is not None else None,
                text_features.float(),
                self.model.logit_scale.exp(),
                labels,
                kind=self.config.loss,  # type: ignore[arg-type]
            )

        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {float(loss)} at step {self.global_step + 1} of stage {stage}; "
                f"lower lr (now {self.config.lr}) or check the input images"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        optimizer.step()
        with torch.no_grad():
            # CLIP keeps its temperature at or above 1/100 by clamping after each step.
            self.model.logit_scale.clamp_(0, math.log(self.config.max_logit_scale))
        parts["loss"] = float(loss.detach())
        return parts

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
        self, stage: int, epoch: int, optimizer: torch.optim.Optimizer, scheduler: Any, complete: bool
    ) -> Path:
        """Write weights, optimizer state, config, schema and split; plain data only (weights_only loads)."""
        path = self.run.checkpoint_path(stage, epoch)
        state = {
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
        atomic_torch_save(state, path)
        self.run.prune_checkpoints(stage, self.config.keep_checkpoints)
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


def train(
    config: TrainConfig | None = None,
    run_dir: str | Path = "runs/demo",
    overwrite: bool = False,
    **parameters: Any,
) -> dict[str, Any]:
    """Train a run end to end and return its test metrics.

    Pass a :class:`TrainConfig` or its fields as keyword arguments, e.g.
    ``train(dataset="demo", epochs_stage1=2, run_dir="runs/try")``.
    """
    if config is None:
        config = TrainConfig(**parameters)
    elif parameters:
        raise TypeError("pass either a TrainConfig or keyword parameters, not both")
    return Trainer(config, run_dir, overwrite=overwrite).run_all()
