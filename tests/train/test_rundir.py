import json
import os
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


def write_checkpoint_at(run: RunDirectory, stage: int, epoch: int, step: int | None) -> Path:
    path = run.checkpoint_path(stage, epoch, step)
    atomic_torch_save({"complete": False, "step": step or 0}, path)
    return path


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


def test_interrupted_stage1_resumes(tmp_path: Path):
    run = RunDirectory(tmp_path)
    run.start(TrainConfig())
    write_checkpoint(run, 1, 1, complete=False)
    assert run.prepare(TrainConfig()) == 1


def test_interrupted_stage2_resumes(tmp_path: Path):
    run = RunDirectory(tmp_path)
    run.start(TrainConfig())
    write_checkpoint(run, 1, 6, complete=True)
    write_checkpoint(run, 2, 3, complete=False)
    assert run.prepare(TrainConfig()) == 2


def test_interrupted_run_with_other_parameters_rejected(tmp_path: Path):
    run = RunDirectory(tmp_path)
    run.start(TrainConfig())
    write_checkpoint(run, 1, 1, complete=False)
    with pytest.raises(RunDirectoryError, match=r"contains a different run \(batch_size: 64 there, 32 now\)"):
        run.prepare(TrainConfig(batch_size=32))


def test_checkpoint_settings_do_not_define_run(tmp_path: Path):
    run = RunDirectory(tmp_path)
    run.start(TrainConfig())
    write_checkpoint(run, 1, 1, complete=False)
    changed = TrainConfig(
        checkpoint_every=5, keep_checkpoints=3, on_nonfinite="skip", grad_checkpointing=True
    )
    assert run.prepare(changed) == 1


def test_mid_epoch_checkpoints_sort_before_epoch_end(tmp_path: Path):
    run = RunDirectory(tmp_path)
    for epoch, step in [(2, None), (1, None), (2, 130), (2, 95), (3, 170)]:
        write_checkpoint_at(run, 1, epoch, step)
    names = [p.name for p in run.checkpoints(1)]
    assert names == [
        "epoch_001.pt",
        "epoch_002_step_0000095.pt",
        "epoch_002_step_0000130.pt",
        "epoch_002.pt",
        "epoch_003_step_0000170.pt",
    ]


def test_latest_checkpoint_prefers_stage2(tmp_path: Path):
    run = RunDirectory(tmp_path)
    assert run.latest_checkpoint() is None
    write_checkpoint(run, 1, 6, complete=True)
    latest = write_checkpoint_at(run, 2, 1, 40)
    assert run.latest_checkpoint() == latest


def test_trim_logs_drops_lines_after_resume_point(tmp_path: Path):
    run = RunDirectory(tmp_path)
    steps = [{"stage": 1 if step <= 4 else 2, "step": step, "loss": 1.0} for step in range(1, 9)]
    run.steps_log_path.write_text("".join(json.dumps(s) + "\n" for s in steps) + '{"stage": 2, "st')
    epochs = [
        {"stage": 1, "epoch": 1},
        {"stage": 1, "epoch": 2},
        {"stage": 2, "epoch": 1},
        {"stage": 2, "epoch": 2},
    ]
    run.metrics_log_path.write_text("".join(json.dumps(e) + "\n" for e in epochs))

    run.trim_logs(stage=2, epochs_done=1, step=6)

    kept_steps = [json.loads(line)["step"] for line in run.steps_log_path.read_text().splitlines()]
    assert kept_steps == [1, 2, 3, 4, 5, 6]
    kept_epochs = [json.loads(line) for line in run.metrics_log_path.read_text().splitlines()]
    assert kept_epochs == epochs[:3]


def test_partial_checkpoint_files_removed(tmp_path: Path):
    run = RunDirectory(tmp_path)
    kept = write_checkpoint(run, 1, 1, complete=False)
    partial = run.checkpoint_dir(1) / "epoch_001_step_0000007.pt.tmp"
    partial.write_bytes(b"half a checkpoint")
    run.remove_partial_checkpoints()
    assert not partial.exists()
    assert kept.exists()


def test_failed_save_keeps_previous_checkpoint(tmp_path: Path):
    run = RunDirectory(tmp_path)
    path = write_checkpoint(run, 1, 1, complete=False)

    class Unpicklable:
        def __reduce__(self):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left on device"):
        atomic_torch_save({"model": {"w": torch.zeros(2)}, "broken": Unpicklable()}, path)
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["model"]["w"], torch.ones(2))
    assert not path.with_name(path.name + ".tmp").exists()


def test_run_dir_under_a_file_rejected(tmp_path: Path):
    (tmp_path / "afile").write_text("x")
    run = RunDirectory(tmp_path / "afile" / "run")
    with pytest.raises(RunDirectoryError, match="cannot be created because .*afile is a file"):
        run.check_writable()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_folder_rejected(tmp_path: Path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(
            RunDirectoryError, match="cannot write to the folder .*locked that would hold run_dir"
        ):
            RunDirectory(folder / "run").check_writable()
    finally:
        folder.chmod(0o700)


def test_too_little_space_rejected(tmp_path: Path):
    run = RunDirectory(tmp_path / "run")
    free = run.free_bytes()
    run.check_free_space(1000, "the checkpoints")
    with pytest.raises(RunDirectoryError, match=r"GB free, but the checkpoints need about .* GB"):
        run.check_free_space(free + 10**12, "the checkpoints")


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
