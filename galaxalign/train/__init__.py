"""Training: configuration, the run directory and the two-stage trainer."""

from galaxalign.train.config import TrainConfig
from galaxalign.train.rundir import RunDirectory, RunDirectoryError
from galaxalign.train.trainer import Trainer, resolve_device, train

__all__ = ["RunDirectory", "RunDirectoryError", "TrainConfig", "Trainer", "resolve_device", "train"]
