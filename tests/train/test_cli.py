"""The command line ``python -m galaxalign.train``: options built from TrainConfig's fields."""

import pytest

from galaxalign.train.__main__ import build_parser


def test_options_convert_to_field_types():
    arguments = vars(
        build_parser().parse_args(
            [
                "--run-dir",
                "runs/x",
                "--lr",
                "1e-3",
                "--epochs-stage1",
                "2",
                "--pretrained",
                "none",
                "--quick-gelu",
                "true",
                "--grad-checkpointing",
                "False",
            ]
        )
    )
    assert arguments["run_dir"] == "runs/x"
    assert arguments["lr"] == 1e-3
    assert arguments["epochs_stage1"] == 2
    assert arguments["pretrained"] is None
    assert arguments["quick_gelu"] is True
    assert arguments["grad_checkpointing"] is False
    assert arguments["checkpoint_every"] == 1000
    assert arguments["overwrite"] is False


def test_invalid_boolean_rejected(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--run-dir", "x", "--download", "maybe"])
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err
