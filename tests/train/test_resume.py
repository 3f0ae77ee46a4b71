"""Resuming interrupted runs: SIGKILL mid-epoch, SIGTERM and Ctrl-C, compared with uninterrupted runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from galaxalign.train import TrainConfig, Trainer, train

REPOSITORY = Path(__file__).resolve().parents[2]

# 24 training galaxies in batches of 8: 3 steps per epoch, 1 epoch per stage, 6 steps in all.
PARAMETERS = dict(
    dataset="catalog",
    batch_size=8,
    image_size=32,
    epochs_stage1=1,
    epochs_stage2=1,
    symbol_variants=2,
    val_fraction=0.25,
    test_fraction=0.25,
    device="cpu",
)


def resume_config(catalog: Path, **overrides) -> TrainConfig:
    return TrainConfig(data_dir=str(catalog), **{**PARAMETERS, **overrides})


def start_training(catalog: Path, run_dir: Path, **overrides) -> subprocess.Popen:
    """Start ``python -m galaxalign.train`` in a subprocess, logging to run_dir/../<name>.log."""
    parameters = {**PARAMETERS, "data_dir": str(catalog), **overrides}
    command = [sys.executable, "-m", "galaxalign.train", "--run-dir", str(run_dir)]
    for name, value in parameters.items():
        command += ["--" + name.replace("_", "-"), str(value)]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")]),
    }
    log = (run_dir.parent / f"{run_dir.name}.log").open("w")
    return subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=run_dir.parent
    )


def logged_steps(run_dir: Path) -> list[dict]:
    path = run_dir / "steps.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line being written right now
    return steps


def wait_for_step(process: subprocess.Popen, run_dir: Path, step: int, timeout: float = 90.0) -> None:
    """Wait until steps.jsonl records global ``step``; fail with the subprocess log if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(s["step"] >= step for s in logged_steps(run_dir)):
            return
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    process.wait()
    log = (run_dir.parent / f"{run_dir.name}.log").read_text()
    pytest.fail(f"training never reached step {step} (exit code {process.returncode}):\n{log[-3000:]}")


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "stage2" / "epoch_001.pt", weights_only=True)["model"]


def test_sigkill_mid_epoch_then_resume_matches(small_catalog: Path, tmp_path: Path):
    # Killed in the middle of stage 2 (global steps 4 to 6), after the checkpoint of step 4.
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    process = start_training(small_catalog, interrupted, checkpoint_every=4)
    wait_for_step(process, interrupted, step=5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert (interrupted / "checkpoints" / "stage2" / "epoch_001_step_0000004.pt").exists()
    assert not (interrupted / "metrics.json").exists()

    resumed = train(resume_config(small_catalog, checkpoint_every=4), run_dir=interrupted)
    reference = train(resume_config(small_catalog, checkpoint_every=0), run_dir=tmp_path / "reference")

    # Same operations in the same order: on a 2-core x86_64 CPU the weights came out bitwise equal.
    # The tolerance (1e-6 absolute) leaves room for a BLAS that splits work differently in another process.
    expected = final_weights(tmp_path / "reference")
    for name, value in final_weights(interrupted).items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-6, msg=name)
    losses = [s["loss"] for s in logged_steps(interrupted)]
    reference_losses = [s["loss"] for s in logged_steps(tmp_path / "reference")]
    assert len(losses) == 6
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
    assert resumed["accuracy"] == pytest.approx(reference["accuracy"])
    epochs = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [(e["stage"], e["epoch"]) for e in epochs] == [(1, 1), (2, 1)]


def test_sigterm_writes_checkpoint_then_exits(small_catalog: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    process = start_training(small_catalog, run_dir, checkpoint_every=0)
    wait_for_step(process, run_dir, step=2)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)

    assert process.returncode == -signal.SIGTERM
    last_step = logged_steps(run_dir)[-1]["step"]
    checkpoints = sorted((run_dir / "checkpoints").rglob("*.pt"))
    state = torch.load(checkpoints[-1], weights_only=True)
    assert state["step"] == last_step
    assert state["complete"] is False
    assert not list((run_dir / "checkpoints").rglob("*.tmp"))


def test_ctrl_c_writes_checkpoint_then_interrupts(small_catalog: Path, tmp_path: Path, monkeypatch):
    trainer = Trainer(resume_config(small_catalog, checkpoint_every=0), tmp_path)
    train_step = trainer.train_step

    def step_then_press_ctrl_c(*arguments, **keywords):
        parts = train_step(*arguments, **keywords)
        if trainer.global_step == 1:  # the step about to be counted is the second
            signal.raise_signal(signal.SIGINT)
        return parts

    monkeypatch.setattr(trainer, "train_step", step_then_press_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        trainer.run_all()

    checkpoint = tmp_path / "checkpoints" / "stage1" / "epoch_001_step_0000002.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["resume"]["epoch_step"] == 2
    assert len(logged_steps(tmp_path)) == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
