"""Training: configuration, the run directory and the two-stage trainer."""

from galaxalign.train.config import TrainConfig
from galaxalign.train.rundir import RunDirectory, RunDirectoryError
from galaxalign.train.trainer import (
    NonFiniteError,
    RunWriteError,
    Trainer,
    TrainingStopped,
    resolve_device,
    train,
)

__all__ = [
    "NonFiniteError",
    "RunDirectory",
    "RunDirectoryError",
    "RunWriteError",
    "TrainConfig",
    "Trainer",
    "TrainingStopped",
    "resolve_device",
    "train",
]
