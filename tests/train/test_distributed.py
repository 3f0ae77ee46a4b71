"""Two CPU processes under torchrun (gloo) against one process with the combined batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from galaxalign.train import TrainConfig, train
from galaxalign.train.distributed import DistributedContext

REPOSITORY = Path(__file__).resolve().parents[2]

# Stage 1 only: 24 training galaxies make two steps of 12, 6 per process under torchrun.
PARAMETERS = dict(
    dataset="catalog",
    stage=1,
    batch_size=12,
    image_size=32,
    epochs_stage1=1,
    max_steps=2,
    symbol_variants=2,
    val_fraction=0.25,
    test_fraction=0.25,
    device="cpu",
    checkpoint_every=0,
)


def step_losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "steps.jsonl").read_text().splitlines()]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "stage1" / "epoch_001.pt", weights_only=True)["model"]


@pytest.mark.skipif(not dist.is_gloo_available(), reason="this PyTorch build has no gloo backend")
def test_two_processes_match_one(small_catalog: Path, tmp_path: Path):
    parameters = {**PARAMETERS, "data_dir": str(small_catalog)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "galaxalign.train",
        "--run-dir",
        str(tmp_path / "two"),
    ]
    for name, value in parameters.items():
        command += ["--" + name.replace("_", "-"), str(value)]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]

    train(TrainConfig(**parameters), run_dir=tmp_path / "one")

    # The losses come from the same gathered features, so only float32 rounding in the
    # towers (batches of 6 against 12) separates them.
    two, one = step_losses(tmp_path / "two"), step_losses(tmp_path / "one")
    assert len(two) == 2
    np.testing.assert_allclose(two, one, rtol=1e-5)
    # Equal weights after two AdamW steps mean the gradients were combined as in one process.
    expected = final_weights(tmp_path / "one")
    for name, value in final_weights(tmp_path / "two").items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-5, msg=name)
    assert "process 1 of 2" not in result.stderr
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["n_test"] == 12


def test_shard_takes_contiguous_share():
    context = DistributedContext(rank=1, world_size=4)
    assert context.shard(np.arange(8)).tolist() == [2, 3]


def test_shard_rejects_uneven_batch():
    with pytest.raises(ValueError, match="batch of 10 galaxies cannot be split evenly over 4 processes"):
        DistributedContext(rank=0, world_size=4).shard(np.arange(10))
