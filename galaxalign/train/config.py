"""Training configuration: every parameter of a run, checked, and saved as config.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from galaxalign.losses import LOSS_KINDS

DATASETS = ("demo", "galaxy10", "galaxymnist", "catalog")

NONFINITE_POLICIES = ("stop", "skip")

# Parameters that may change between two calls on one run directory without
# making it a different run. They set which stage to stop after, where it runs,
# whether missing data may be downloaded, and how often and how many checkpoints
# are kept. The last two set what a non-finite step does and whether activations
# are recomputed in the backward pass, which saves memory without changing results.
NON_DEFINING_KEYS = frozenset(
    {
        "stage",
        "device",
        "download",
        "checkpoint_every",
        "keep_checkpoints",
        "on_nonfinite",
        "grad_checkpointing",
    }
)


@dataclass
class TrainConfig:
    """Every parameter of a training run.

    ``stage`` 1 runs the warm-up only; 2 runs both stages, skipping stage 1
    when the run directory already contains a finished stage 1.
    ``epochs_stage1=0`` with ``stage=2`` is the "stage 2 only" ablation: the
    symbol tower starts as a copy of the pre-trained image tower.
    ``symbols`` is "builtin" (the procedural symbols), "none" (text–image CLIP
    without symbols) or a folder holding one image per class named
    ``<class_name>.png`` (or .jpg). ``max_steps`` caps the optimizer steps of
    each stage (0 = no cap), for smoke runs. ``image_size`` is in pixels;
    ``crop_fraction`` keeps the central fraction of each cutout before resizing.
    ``stage2_lr_scale`` multiplies ``lr`` for stage 2, whose optimizer restarts
    its warm-up from the stage-1 weights.
    ``download`` fetches Galaxy10 or GalaxyMNIST into ``data_dir`` when missing.
    ``checkpoint_every`` writes a checkpoint every that many optimizer steps
    (counted over the whole run) besides the one at each epoch's end; 0 writes
    only those. ``keep_checkpoints`` is how many of each stage stay on disk
    (0 keeps all). ``on_nonfinite`` is "stop" (raise at the first step with a
    non-finite loss or gradient) or "skip" (leave the weights unchanged for
    that step and go on). ``grad_checkpointing`` recomputes the towers'
    activations during the backward pass: less GPU memory, at the cost of a
    second forward pass.
    ``batch_size`` is the batch of one optimizer step over all processes; under
    torchrun each process takes ``batch_size / world size`` galaxies of it.
    """

    dataset: str = "demo"
    data_dir: str | None = None
    download: bool = False
    model: str = "small"
    pretrained: str | None = "default"
    quick_gelu: bool | None = None
    symbols: str = "builtin"
    stage: int = 2
    epochs_stage1: int = 6
    epochs_stage2: int = 18
    batch_size: int = 64
    lr: float = 5e-4
    stage2_lr_scale: float = 1.0
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    grad_clip: float = 1.0
    max_logit_scale: float = 100.0
    loss: str = "class_aware"
    image_size: int = 64
    crop_fraction: float = 1.0
    symbol_variants: int = 16
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    max_steps: int = 0
    device: str = "auto"
    cache_dir: str | None = None
    skip_unreadable: bool = False
    keep_checkpoints: int = 1
    checkpoint_every: int = 1000
    on_nonfinite: str = "stop"
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        # Accept what notebooks and scripts naturally pass: paths and numpy scalars.
        for name in ("data_dir", "cache_dir", "symbols", "pretrained"):
            value = getattr(self, name)
            if isinstance(value, Path):
                setattr(self, name, str(value))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.generic):
                setattr(self, field.name, value.item())
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid parameter and its allowed values."""
        if isinstance(self.stage, bool) or not isinstance(self.stage, int) or self.stage not in (1, 2):
            raise ValueError(
                f"stage must be 1 (warm-up only) or 2 (warm-up, then joint training), got {self.stage!r}"
            )
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.dataset == "catalog" and not self.data_dir:
            raise ValueError("dataset='catalog' needs data_dir: the catalog CSV or a folder with catalog.csv")

        _check_int(self, "epochs_stage1", minimum=0)
        _check_int(self, "epochs_stage2", minimum=0)
        if self.stage == 1 and self.epochs_stage1 == 0:
            raise ValueError("stage=1 needs epochs_stage1 >= 1")
        if self.stage == 2 and self.epochs_stage2 == 0:
            raise ValueError("stage=2 needs epochs_stage2 >= 1 (use stage=1 for the warm-up alone)")

        numbers = (
            "lr",
            "stage2_lr_scale",
            "weight_decay",
            "warmup_fraction",
            "grad_clip",
            "max_logit_scale",
            "crop_fraction",
            "val_fraction",
            "test_fraction",
        )
        for name in numbers:
            _check_number(self, name)
        _check_int(self, "batch_size", minimum=2)
        # The small preset's ConvNeXt downsamples by 32, so smaller inputs vanish.
        _check_int(self, "image_size", minimum=32)
        _check_int(self, "symbol_variants", minimum=1)
        _check_int(self, "max_steps", minimum=0)
        _check_int(self, "keep_checkpoints", minimum=0)
        _check_int(self, "checkpoint_every", minimum=0)
        if self.on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                f"on_nonfinite must be 'stop' (raise at a non-finite loss or gradient) or 'skip' (leave "
                f"the weights unchanged for that step), got {self.on_nonfinite!r}"
            )
        for name in ("download", "skip_unreadable", "grad_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        _check_int(self, "seed", minimum=0)

        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not self.stage2_lr_scale > 0:
            raise ValueError(f"stage2_lr_scale must be positive, got {self.stage2_lr_scale!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if not 1 < self.max_logit_scale <= 100:
            raise ValueError(f"max_logit_scale must be in (1, 100], got {self.max_logit_scale!r}")
        if self.loss not in LOSS_KINDS:
            raise ValueError(f"loss must be one of {LOSS_KINDS}, got {self.loss!r}")

        for name in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be below 1 to leave galaxies for training, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}")
        if self.symbols not in ("builtin", "none") and not Path(self.symbols).is_dir():
            raise ValueError(
                f"symbols must be 'builtin', 'none' or a folder of per-class symbol images; "
                f"{self.symbols!r} is not a folder"
            )

    @property
    def uses_symbols(self) -> bool:
        return self.symbols != "none"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training parameters {unknown}; known parameters: {sorted(known)}")
        return cls(**data)

    def differences(self, other: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Return the run-defining parameters whose value differs from ``other``: name -> (other, self)."""
        mine = self.to_dict()
        keys = (set(mine) | set(other)) - NON_DEFINING_KEYS
        return {k: (other.get(k), mine.get(k)) for k in sorted(keys) if other.get(k) != mine.get(k)}


def _check_number(config: TrainConfig, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_int(config: TrainConfig, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
