import json
from pathlib import Path

import pytest
import torch

from galaxalign.train.config import TrainConfig
from galaxalign.train.rundir import EVALUATE_ONLY, RunDirectory, RunDirectoryError, atomic_torch_save


def write_checkpoint(run: RunDirectory, stage: int, epoch: int, complete: bool) -> Path:
    path = run.checkpoint_path(stage, epoch)
    atomic_torch_save({"model": {"w": torch.ones(2)}, "complete": complete, "step": epoch}, path)
    return path


def test_prepare_writes_nothing(tmp_path: Path):
    run = RunDirectory(tmp_path / "run")
    assert run.prepare(TrainConfig()) == 1
    assert not (tmp_path / "run").exists()


def test_start_writes_config(tmp_path: Path):
    run = RunDirectory(tmp_path / "run")
    run.start(TrainConfig())
    record = json.loads(run.config_path.read_text())
    assert record["parameters"]["epochs_stage1"] == 6
    assert record["galaxalign_version"] == "0.1.0"


def test_stage_two_only_starts_at_two(tmp_path: Path):
    run = RunDirectory(tmp_path)
    assert run.prepare(TrainConfig(epochs_stage1=0)) == 2


def test_foreign_folder_rejected(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match=r"not empty \(notes.txt\)"):
        RunDirectory(tmp_path).prepare(TrainConfig())
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_executed_notebook_does_not_count_as_content(tmp_path: Path):
    (tmp_path / "train.ipynb").write_text("{}")
    assert RunDirectory(tmp_path).prepare(TrainConfig()) == 1


def test_different_run_rejected_with_differences(tmp_path: Path):
    run = RunDirectory(tmp_path)
    run.start(TrainConfig(lr=1e-3))
    with pytest.raises(RunDirectoryError, match=r"contains a different run \(lr: 0.001 there, 0.0005 now\)"):
        run.prepare(TrainConfig(lr=5e-4))


def test_finished_stage1_continues_with_stage2(tmp_path: Path):
    run = RunDirectory(tmp_path)
    run.start(TrainConfig(stage=1))
    write_checkpoint(run, 1, 4, complete=True)
    assert run.prepare(TrainConfig(stage=2)) == 2


def test_finished_stage1_not_repeated(tmp_path: Path):
    run = RunDirectory(tmp_path)
    run.start(TrainConfig(stage=1))
    write_checkpoint(run, 1, 4, complete=True)
    run.metrics_path.write_text("{}")
    with pytest.raises(RunDirectoryError, match="stage 1 of this run already finished"):
        run.prepare(TrainConfig(stage=1))


def test_finished_stage_without_metrics_is_evaluated(tmp_path: Path):
    run = RunDirectory(tmp_path)
    run.start(TrainConfig())
    write_checkpoint(run, 2, 8, complete=True)
    assert run.prepare(TrainConfig()) == EVALUATE_ONLY


def test_interrupted_stage_rejected(tmp_path: Path):
    run = RunDirectory(tmp_path)
    run.start(TrainConfig())
    write_checkpoint(run, 1, 1, complete=False)
    with pytest.raises(RunDirectoryError, match="interrupted at epoch_001.pt"):
        run.prepare(TrainConfig())


def test_finished_run_not_overwritten_without_asking(tmp_path: Path):
    run = RunDirectory(tmp_path)
    run.start(TrainConfig())
    checkpoint = write_checkpoint(run, 2, 6, complete=True)
    run.metrics_path.write_text("{}")
    with pytest.raises(RunDirectoryError, match="stage 2 of this run finished"):
        run.prepare(TrainConfig())
    assert checkpoint.exists()


def test_overwrite_removes_only_run_outputs(tmp_path: Path):
    run = RunDirectory(tmp_path)
    run.start(TrainConfig())
    write_checkpoint(run, 2, 6, complete=True)
    run.metrics_path.write_text("{}")
    (tmp_path / "my_notes.md").write_text("keep me")
    (tmp_path / "checkpoints" / "README").write_text("my checkpoint notes")
    (tmp_path / "embeddings").mkdir()
    (tmp_path / "embeddings" / "my_umap.npz").write_bytes(b"mine")
    (tmp_path / "embeddings" / "test.npz").write_bytes(b"run output")

    assert run.prepare(TrainConfig(lr=5e-4), overwrite=True) == 1
    run.start(TrainConfig(lr=5e-4), overwrite=True)

    assert not run.checkpoint_path(2, 6).exists()
    assert not run.checkpoint_dir(2).exists()
    assert not run.metrics_path.exists()
    assert not (tmp_path / "embeddings" / "test.npz").exists()
    assert (tmp_path / "my_notes.md").read_text() == "keep me"
    assert (tmp_path / "checkpoints" / "README").read_text() == "my checkpoint notes"
    assert (tmp_path / "embeddings" / "my_umap.npz").read_bytes() == b"mine"
    assert run.read_config()["lr"] == 5e-4


def test_overwrite_never_clears_foreign_folder(tmp_path: Path):
    (tmp_path / "metrics.json").write_text("{my own}")
    with pytest.raises(RunDirectoryError, match="contains no galaxalign run"):
        RunDirectory(tmp_path).prepare(TrainConfig(), overwrite=True)
    assert (tmp_path / "metrics.json").read_text() == "{my own}"


def test_file_as_run_dir_rejected(tmp_path: Path):
    target = tmp_path / "afile"
    target.write_text("x")
    with pytest.raises(RunDirectoryError, match="is a file; pass the path of a folder"):
        RunDirectory(target).prepare(TrainConfig())


def test_prune_keeps_newest(tmp_path: Path):
    run = RunDirectory(tmp_path)
    for epoch in range(1, 5):
        write_checkpoint(run, 1, epoch, complete=epoch == 4)
    run.prune_checkpoints(1, keep=2)
    assert [p.name for p in run.checkpoints(1)] == ["epoch_003.pt", "epoch_004.pt"]
    assert run.stage_status(1).complete


def test_checkpoint_loads_with_weights_only(tmp_path: Path):
    run = RunDirectory(tmp_path)
    path = write_checkpoint(run, 1, 1, complete=True)
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["model"]["w"], torch.ones(2))
    assert not path.with_name(path.name + ".tmp").exists()
