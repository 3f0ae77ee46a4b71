"""The run directory: where a run's configuration, split, checkpoints and metrics live."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import galaxalign
from galaxalign.train.config import TrainConfig

logger = logging.getLogger(__name__)

# Files that a run writes at its top level; ``overwrite=True`` removes these, the
# checkpoints and embeddings the run wrote, and nothing else.
RUN_FILES = (
    "config.json",
    "split.json",
    "schema.json",
    "symbols.png",
    "metrics.jsonl",
    "steps.jsonl",
    "metrics.json",
    "metrics_stage1.json",
)
RUN_EMBEDDINGS = ("test.npz",)

# ``prepare`` returns this in place of a stage when the newest finished stage only lacks
# its test metrics (for example after a crash during the final evaluation).
EVALUATE_ONLY = 0


class RunDirectoryError(RuntimeError):
    """Raised when the contents of a run directory do not fit the requested run."""


@dataclass(frozen=True)
class StageStatus:
    """The newest checkpoint of one stage in a run directory, and whether the stage finished."""

    latest: Path | None
    complete: bool


def git_commit() -> str | None:
    """Return the commit of the galaxalign source tree, or None outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(galaxalign.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


# Checkpoint file names: ``epoch_003.pt`` is written at the end of epoch 3, and
# ``epoch_003_step_0000150.pt`` during epoch 3, after global optimizer step 150.
CHECKPOINT_NAME = re.compile(r"epoch_(\d+)(?:_step_(\d+))?\.pt")

# errno values that mean the disk (or the user's quota or file size limit) is full.
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Save with torch.save to a temporary name, then rename, so a crash never leaves half a file.

    The file is flushed to disk before the rename and the folder after it, so
    even a power loss leaves either the previous file or the complete new one.
    On any error the temporary file is removed and the error re-raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        # Some file systems cannot sync a folder, and the rename has happened either way.
        pass
    finally:
        os.close(descriptor)


def checkpoint_order(path: Path) -> tuple[int, float]:
    """Sort key of a checkpoint file: (epoch, global step), an epoch's end after its mid-epoch files."""
    match = CHECKPOINT_NAME.fullmatch(path.name)
    if match is None:
        return (-1, -1.0)
    epoch, step = match.groups()
    return (int(epoch), math.inf if step is None else float(step))


def atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class RunDirectory:
    """A folder holding one run: ``config.json``, ``split.json``, ``schema.json``,
    ``symbols.png``, ``metrics.jsonl`` (one line per epoch), ``steps.jsonl`` (the
    loss of every step), ``checkpoints/stage1|stage2/epoch_NNN.pt`` (and
    ``epoch_NNN_step_NNNNNNN.pt`` written during an epoch), ``metrics.json``
    (final test metrics) and ``embeddings/``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def split_path(self) -> Path:
        return self.path / "split.json"

    @property
    def schema_path(self) -> Path:
        return self.path / "schema.json"

    @property
    def symbols_path(self) -> Path:
        return self.path / "symbols.png"

    @property
    def metrics_log_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def steps_log_path(self) -> Path:
        return self.path / "steps.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def embeddings_dir(self) -> Path:
        return self.path / "embeddings"

    def checkpoint_dir(self, stage: int) -> Path:
        return self.path / "checkpoints" / f"stage{stage}"

    def checkpoint_path(self, stage: int, epoch: int, step: int | None = None) -> Path:
        """Path of the checkpoint at the end of ``epoch``, or during it after global ``step``."""
        if step is None:
            return self.checkpoint_dir(stage) / f"epoch_{epoch:03d}.pt"
        return self.checkpoint_dir(stage) / f"epoch_{epoch:03d}_step_{step:07d}.pt"

    def checkpoints(self, stage: int) -> list[Path]:
        """Checkpoints of ``stage``, oldest first (mid-epoch ones before their epoch's end)."""
        folder = self.checkpoint_dir(stage)
        if not folder.is_dir():
            return []
        found = [p for p in folder.glob("epoch_*.pt") if CHECKPOINT_NAME.fullmatch(p.name)]
        return sorted(found, key=checkpoint_order)

    def latest_checkpoint(self) -> Path | None:
        """Return the newest checkpoint of the newest stage that has one, or None."""
        for stage in (2, 1):
            found = self.checkpoints(stage)
            if found:
                return found[-1]
        return None

    def stage_status(self, stage: int) -> StageStatus:
        found = self.checkpoints(stage)
        if not found:
            return StageStatus(latest=None, complete=False)
        latest = found[-1]
        # A memory map reads only the "complete" flag, not the weights and optimizer state.
        state = torch.load(latest, map_location="cpu", weights_only=True, mmap=True)
        return StageStatus(latest=latest, complete=bool(state.get("complete", False)))

    def read_config(self) -> dict[str, Any]:
        data = json.loads(self.config_path.read_text())
        return dict(data["parameters"])

    def prepare(self, config: TrainConfig, overwrite: bool = False) -> int:
        """Check the folder against ``config`` and return the first stage still to train.

        Nothing is written here, so a run that fails on a bad parameter can be
        started again with the parameter fixed. A new or empty folder (executed
        notebooks and hidden files aside) starts a new run. A folder of the same
        run continues with stage 2 when only stage 1 is finished, and returns
        ``EVALUATE_ONLY`` when the newest finished stage lacks ``metrics.json``.
        Anything else raises :class:`RunDirectoryError` naming what is there.
        ``overwrite=True`` allows starting over in a folder that contains an
        earlier galaxalign run (see :meth:`start`), but never in a folder of
        files that galaxalign did not write.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"run_dir {self.path} is a file; pass the path of a folder")
        first_stage = 1 if config.epochs_stage1 > 0 else 2

        if not self.config_path.exists():
            foreign = [p.name for p in self.path.iterdir() if not _ignorable(p)] if self.path.is_dir() else []
            if foreign:
                raise RunDirectoryError(
                    f"run_dir {self.path} is not empty ({', '.join(sorted(foreign)[:5])}) and contains no "
                    "galaxalign run (no config.json); choose a new or empty folder"
                )
            return first_stage
        if overwrite:
            return first_stage

        differences = config.differences(self.read_config())
        if differences:
            listed = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in differences.items())
            raise RunDirectoryError(
                f"run_dir {self.path} contains a different run ({listed}). Choose a new run_dir, or pass "
                "overwrite=True to delete that run's outputs and start over"
            )
        return self._next_stage(config)

    def _next_stage(self, config: TrainConfig) -> int:
        stage1, stage2 = self.stage_status(1), self.stage_status(2)
        restart_hint = "pass overwrite=True to start this run over, or choose a new run_dir"
        if stage2.latest is not None:
            if stage2.complete and not self.metrics_path.exists():
                return EVALUATE_ONLY
            if stage2.complete:
                raise RunDirectoryError(f"run_dir {self.path}: stage 2 of this run finished; {restart_hint}")
            logger.info("resuming stage 2 of the run in %s from %s", self.path, stage2.latest.name)
            return 2
        if config.epochs_stage1 == 0:
            return 2
        if stage1.latest is None:
            return 1
        if not stage1.complete:
            logger.info("resuming stage 1 of the run in %s from %s", self.path, stage1.latest.name)
            return 1
        if config.stage == 1:
            if not self.metrics_path.exists():
                return EVALUATE_ONLY
            raise RunDirectoryError(
                f"run_dir {self.path}: stage 1 of this run already finished; run stage=2 to continue "
                f"it, or {restart_hint}"
            )
        logger.info("stage 1 already finished in %s; continuing with stage 2", self.path)
        return 2

    def start(self, config: TrainConfig, overwrite: bool = False) -> None:
        """Create the folder, clear an earlier run when ``overwrite`` is set, and write ``config.json``.

        Call after :meth:`prepare` accepted the folder. Keeps an existing
        ``config.json`` of the same run (whose parameters already match).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if overwrite and self.config_path.exists():
            self.clear()
        if not self.config_path.exists():
            self.write_config(config)

    def clear(self) -> None:
        """Delete the files this run wrote (and only those), then any folders that became empty."""
        targets = [self.path / name for name in RUN_FILES]
        for stage in (1, 2):
            folder = self.checkpoint_dir(stage)
            if folder.is_dir():
                targets += list(folder.glob("epoch_*.pt")) + list(folder.glob("epoch_*.pt.tmp"))
        targets += [self.embeddings_dir / name for name in RUN_EMBEDDINGS]
        for target in targets:
            if target.is_file():
                target.unlink()
        for folder in (
            self.checkpoint_dir(1),
            self.checkpoint_dir(2),
            self.path / "checkpoints",
            self.embeddings_dir,
        ):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        logger.info("removed the outputs of the previous run in %s", self.path)

    def write_config(self, config: TrainConfig) -> None:
        record = {
            "parameters": config.to_dict(),
            "galaxalign_version": galaxalign.__version__,
            "git_commit": git_commit(),
            "torch_version": torch.__version__,
        }
        atomic_write_text(self.config_path, json.dumps(record, indent=2) + "\n")

    def append_jsonl(self, path: Path, record: dict[str, Any]) -> None:
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def remove_partial_checkpoints(self) -> None:
        """Delete temporary checkpoint files that a crash during a write left behind."""
        for stage in (1, 2):
            folder = self.checkpoint_dir(stage)
            if folder.is_dir():
                for partial in folder.glob("epoch_*.pt.tmp"):
                    logger.info("removing %s, a checkpoint whose write did not finish", partial)
                    partial.unlink()

    def trim_logs(self, stage: int, epochs_done: int, step: int) -> None:
        """Drop log lines written after the point a resumed run restarts from.

        ``steps.jsonl`` keeps the steps up to global ``step``, and
        ``metrics.jsonl`` the epochs of earlier stages and the first
        ``epochs_done`` epochs of ``stage``. A line cut short by a crash is
        dropped too.
        """
        self._filter_jsonl(self.steps_log_path, lambda r: r["step"] <= step)
        self._filter_jsonl(
            self.metrics_log_path,
            lambda r: r["stage"] < stage or (r["stage"] == stage and r["epoch"] <= epochs_done),
        )

    def _filter_jsonl(self, path: Path, keep: Any) -> None:
        if not path.exists():
            return
        lines = path.read_text().splitlines()
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if keep(record):
                kept.append(line)
        if len(kept) < len(lines):
            atomic_write_text(path, "".join(line + "\n" for line in kept))
            logger.info(
                "dropped %d lines written after the resumed checkpoint from %s", len(lines) - len(kept), path
            )

    def check_writable(self) -> None:
        """Raise :class:`RunDirectoryError` when the run directory cannot be created or written.

        Writes nothing that stays: for a missing folder it checks the nearest
        existing parent with an unnamed temporary file.
        """
        folder = self.path
        while not folder.exists():
            if folder.parent == folder:
                break
            folder = folder.parent
        if not folder.is_dir():
            raise RunDirectoryError(
                f"run_dir {self.path} cannot be created because {folder} is a file; choose another run_dir"
            )
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            where = "run_dir" if folder == self.path else f"the folder {folder} that would hold run_dir"
            raise RunDirectoryError(
                f"cannot write to {where} {self.path} ({error.strerror or error}); choose a run_dir on a "
                "writable disk or fix its permissions"
            ) from error

    def free_bytes(self) -> int:
        """Return the free bytes on the disk of the run directory (or of its nearest existing parent)."""
        folder = self.path
        while not folder.exists() and folder.parent != folder:
            folder = folder.parent
        return shutil.disk_usage(folder).free

    def check_free_space(self, required: int, what: str) -> None:
        """Raise :class:`RunDirectoryError` when fewer than ``required`` bytes are free for ``what``."""
        free = self.free_bytes()
        if free < required:
            raise RunDirectoryError(
                f"the disk holding run_dir {self.path} has {free / 1e9:.2f} GB free, but {what} need about "
                f"{required / 1e9:.2f} GB; free some space, choose a run_dir on a larger disk, or lower "
                "keep_checkpoints"
            )

    def prune_checkpoints(self, stage: int, keep: int) -> None:
        """Delete all but the newest ``keep`` checkpoints of ``stage`` (``keep=0`` keeps all)."""
        if keep <= 0:
            return
        for old in self.checkpoints(stage)[:-keep]:
            old.unlink()


def _ignorable(path: Path) -> bool:
    return path.name.startswith(".") or path.suffix == ".ipynb"
