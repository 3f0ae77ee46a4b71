"""The throughput paths that also run on a CPU: prefetched batches, gradient checkpointing, channels_last."""

from pathlib import Path

import numpy as np
import pytest
import torch
from small_runs import small_config

from galaxalign.train import Trainer
from galaxalign.train.loader import BatchPrefetcher
from galaxalign.train.trainer import is_convnext, prepare_towers


def step_and_weights(trainer: Trainer) -> tuple[dict, dict[str, torch.Tensor]]:
    """Take one stage-2 AdamW step on the first 8 training galaxies; return the parts and the new weights."""
    trainer.model.split_symbol_tower()
    optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=1e-3)
    positions = np.sort(trainer.data.train[:8])
    parts = trainer.train_step(2, positions, optimizer, torch.Generator().manual_seed(0))
    return parts, {name: value.detach().clone() for name, value in trainer.model.state_dict().items()}


def test_prefetcher_yields_batches_in_order():
    pixels = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    rows_of = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    batches = [np.array([0, 1]), np.array([5]), np.array([2, 3, 4])]
    seen = list(BatchPrefetcher(pixels, rows_of, batches))
    assert [positions.tolist() for positions, _ in seen] == [[0, 1], [5], [2, 3, 4]]
    for positions, images in seen:
        assert np.array_equal(images.numpy(), pixels[rows_of[positions]])


def test_prefetcher_without_batches_yields_nothing():
    assert list(BatchPrefetcher(np.zeros((1, 2, 2, 3), np.uint8), np.zeros(1, np.int64), [])) == []


def test_small_preset_is_convnext(small_catalog: Path, tmp_path: Path):
    trainer = Trainer(small_config(small_catalog), tmp_path)
    assert is_convnext(trainer.model.clip.visual)
    assert trainer.channels_last is False


def test_cuda_device_chooses_channels_last(small_catalog: Path, tmp_path: Path):
    trainer = Trainer(small_config(small_catalog), tmp_path)
    # The layout is chosen by device type; converting the weights works on CPU tensors too.
    assert prepare_towers(trainer.model, torch.device("cuda"), grad_checkpointing=False)
    stem = trainer.model.clip.visual.trunk.stem[0].weight
    assert stem.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "option", [{"grad_checkpointing": True}, {"channels_last": True}], ids=["checkpointing", "channels_last"]
)
def test_memory_options_keep_the_step(small_catalog: Path, tmp_path: Path, option: dict):
    reference_parts, reference = step_and_weights(Trainer(small_config(small_catalog), tmp_path / "plain"))

    trainer = Trainer(small_config(small_catalog), tmp_path / "option")
    trainer.channels_last = prepare_towers(
        trainer.model,
        trainer.device,
        grad_checkpointing=option.get("grad_checkpointing", False),
        channels_last=option.get("channels_last"),
    )
    if option.get("grad_checkpointing"):
        assert all(stage.grad_checkpointing for stage in trainer.model.clip.visual.trunk.stages)
        assert trainer.model.clip.transformer.grad_checkpointing
    parts, weights = step_and_weights(trainer)

    assert parts["loss"] == pytest.approx(reference_parts["loss"], rel=1e-5)
    for name, value in weights.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-6, msg=name)
