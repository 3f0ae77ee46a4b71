from pathlib import Path

import pytest

from galaxalign.train.config import TrainConfig


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"stage": 3}, "stage must be 1 .* got 3"),
        ({"stage": "2"}, "stage must be 1 .* got '2'"),
        ({"stage": True}, "stage must be 1 .* got True"),
        ({"stage": 2.0}, "stage must be 1 .* got 2.0"),
        ({"dataset": "sdss"}, "dataset must be one of .* got 'sdss'"),
        ({"dataset": "catalog"}, "dataset='catalog' needs data_dir"),
        ({"batch_size": 1}, "batch_size must be an integer >= 2, got 1"),
        ({"epochs_stage2": -1}, "epochs_stage2 must be an integer >= 0"),
        ({"stage": 1, "epochs_stage1": 0}, "stage=1 needs epochs_stage1 >= 1"),
        ({"stage": 2, "epochs_stage2": 0}, "stage=2 needs epochs_stage2 >= 1"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"loss": "triplet"}, "loss must be one of"),
        ({"crop_fraction": 1.5}, r"crop_fraction must be in \(0, 1\]"),
        ({"max_logit_scale": 1000.0}, "max_logit_scale must be in"),
        ({"max_steps": 2.5}, "max_steps must be an integer"),
    ],
)
def test_invalid_parameter_is_named(parameters: dict, message: str):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**parameters)


def test_symbols_folder_must_exist(tmp_path: Path):
    with pytest.raises(ValueError, match="is not a folder"):
        TrainConfig(symbols=str(tmp_path / "missing"))
    assert TrainConfig(symbols=str(tmp_path)).uses_symbols


def test_round_trip_through_dict():
    config = TrainConfig(stage=1, epochs_stage1=2, lr=3e-4, symbols="none")
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert not config.uses_symbols


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown training parameters \['epochs'\]"):
        TrainConfig.from_dict({"epochs": 3})


def test_differences_ignore_stage_and_device():
    first = TrainConfig(stage=1, device="cpu")
    second = TrainConfig(stage=2, device="cuda")
    assert second.differences(first.to_dict()) == {}
    third = TrainConfig(stage=2, lr=1e-3)
    assert third.differences(first.to_dict()) == {"lr": (5e-4, 1e-3)}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction \\+ test_fraction must be below 1"),
        ({"test_fraction": -0.1}, r"test_fraction must be in \[0, 1\)"),
        ({"image_size": 24}, "image_size must be an integer >= 32"),
        ({"device": "gpu"}, "device must be 'auto', 'cpu'"),
        ({"lr": "1e-3"}, "lr must be a finite number, got '1e-3'"),
        ({"lr": float("inf")}, "lr must be a finite number"),
    ],
)
def test_more_invalid_parameters(parameters: dict, message: str):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**parameters)


def test_paths_and_numpy_scalars_accepted(tmp_path: Path):
    import numpy as np

    config = TrainConfig(dataset="catalog", data_dir=tmp_path, batch_size=np.int64(8), lr=np.float32(0.5))
    assert config.data_dir == str(tmp_path)
    assert config.batch_size == 8
    assert type(config.batch_size) is int
    assert config.lr == 0.5
