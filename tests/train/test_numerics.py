"""Guarded numerics and disk trouble: non-finite steps, temperature bounds, full or unwritable disks."""

import json
import math
import resource
from pathlib import Path

import numpy as np
import pytest
import small_runs
import torch

from galaxalign.train import TrainConfig, Trainer
from galaxalign.train.rundir import RunDirectory, RunDirectoryError
from galaxalign.train.trainer import NonFiniteError, RunWriteError


def small_config(catalog: Path, **overrides) -> TrainConfig:
    """Return the small CPU config with periodic checkpoints off unless ``overrides`` turn them on."""
    return small_runs.small_config(catalog, **{"checkpoint_every": 0, **overrides})


def one_step(trainer: Trainer, lr: float = 0.1) -> dict:
    optimizer = torch.optim.SGD(trainer.model.parameters(), lr=lr)
    positions = np.sort(trainer.data.train[:8])
    return trainer.train_step(1, positions, optimizer, torch.Generator().manual_seed(0))


def infinite_gradient_once(trainer: Trainer) -> None:
    """Make the logit scale's gradient infinite in the next backward pass only."""
    handle = None

    def hook(gradient: torch.Tensor) -> torch.Tensor:
        handle.remove()
        return gradient + math.inf

    handle = trainer.model.logit_scale.register_hook(hook)


def test_nonfinite_gradient_stops_with_step(small_catalog: Path, tmp_path: Path):
    trainer = Trainer(small_config(small_catalog), tmp_path)
    infinite_gradient_once(trainer)
    with pytest.raises(
        NonFiniteError, match=r"gradient norm inf at step 1 of stage 1\. The last good checkpoint is none"
    ):
        one_step(trainer)


def test_nonfinite_step_skipped_keeps_weights(small_catalog: Path, tmp_path: Path):
    trainer = Trainer(small_config(small_catalog, on_nonfinite="skip"), tmp_path)
    before = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    infinite_gradient_once(trainer)

    parts = one_step(trainer)

    assert parts["skipped"] is True
    assert math.isinf(parts["grad_norm"])
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert "skipped" not in one_step(trainer)


def test_nonfinite_loss_names_last_checkpoint(small_catalog: Path, tmp_path: Path, monkeypatch):
    trainer = Trainer(small_config(small_catalog, checkpoint_every=1), tmp_path)
    train_step = trainer.train_step

    def poison_after_two_steps(*arguments, **keywords):
        if trainer.global_step == 2:
            with torch.no_grad():
                trainer.model.logit_scale.fill_(math.nan)
        return train_step(*arguments, **keywords)

    monkeypatch.setattr(trainer, "train_step", poison_after_two_steps)
    with pytest.raises(NonFiniteError) as raised:
        trainer.run_all()
    message = str(raised.value)
    assert "non-finite loss nan" in message
    assert "at step 3 of stage 1" in message
    assert (
        f"last good checkpoint is {tmp_path / 'checkpoints' / 'stage1' / 'epoch_001_step_0000002.pt'}"
        in message
    )
    assert "on_nonfinite='skip'" in message


def test_skipped_step_logged_and_run_finishes(small_catalog: Path, tmp_path: Path, monkeypatch):
    trainer = Trainer(small_config(small_catalog, on_nonfinite="skip"), tmp_path)
    train_step = trainer.train_step

    def infinite_at_second_step(*arguments, **keywords):
        if trainer.global_step == 1:
            infinite_gradient_once(trainer)
        return train_step(*arguments, **keywords)

    monkeypatch.setattr(trainer, "train_step", infinite_at_second_step)
    metrics = trainer.run_all()
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if s.get("skipped")] == [2]
    assert len(steps) == 6
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_logit_scale_kept_at_or_above_zero(small_catalog: Path, tmp_path: Path):
    trainer = Trainer(small_config(small_catalog), tmp_path)
    with torch.no_grad():
        trainer.model.logit_scale.fill_(-3.0)
    one_step(trainer, lr=0.0)
    assert trainer.model.logit_scale.item() == 0.0


def test_logit_scale_from_checkpoint_clamped(small_catalog: Path, tmp_path: Path, monkeypatch):
    trainer = Trainer(small_config(small_catalog, stage=1, max_steps=1), tmp_path)
    with torch.no_grad():
        trainer.model.logit_scale.fill_(9.0)
    seen = []
    train_step = trainer.train_step
    monkeypatch.setattr(
        trainer,
        "train_step",
        lambda *a, **k: seen.append(trainer.model.logit_scale.item()) or train_step(*a, **k),
    )
    trainer.train_stage(1, 1)
    assert seen == [pytest.approx(math.log(100.0))]


def test_full_disk_reported_with_free_space(small_catalog: Path, tmp_path: Path):
    trainer = Trainer(small_config(small_catalog), tmp_path)
    # A file size limit of 20 MB makes the 0.2 GB checkpoint fail the way a full disk does.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 2**20, hard))
    try:
        with pytest.raises(
            RunWriteError, match=r"could not write .*epoch_001.pt: File too large \(.* GB free"
        ):
            trainer.run_all()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert not list((tmp_path / "checkpoints").rglob("*.tmp"))
    assert not list((tmp_path / "checkpoints").rglob("*.pt"))


def test_too_small_disk_rejected_before_training(small_catalog: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(RunDirectory, "free_bytes", lambda self: 50 * 10**6)
    with pytest.raises(
        RunDirectoryError, match=r"has 0.05 GB free, but the checkpoints this run still writes need"
    ):
        Trainer(small_config(small_catalog), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_run_dir_under_file_rejected_first(small_catalog: Path, tmp_path: Path):
    (tmp_path / "notes").write_text("a file, not a folder")
    with pytest.raises(RunDirectoryError, match="cannot be created because .*notes is a file"):
        Trainer(small_config(small_catalog), tmp_path / "notes" / "run")


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"on_nonfinite": "ignore"}, "on_nonfinite must be 'stop' .* or 'skip' .* got 'ignore'"),
        ({"checkpoint_every": -1}, "checkpoint_every must be an integer >= 0, got -1"),
        ({"grad_checkpointing": "yes"}, "grad_checkpointing must be True or False, got 'yes'"),
    ],
)
def test_new_parameters_validated(parameters: dict, message: str):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**parameters)
