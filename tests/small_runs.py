"""Training configurations small enough for tests on the CPU."""

from pathlib import Path

from galaxalign.train import TrainConfig


def small_config(catalog: Path, **overrides) -> TrainConfig:
    """Return a CPU config on ``catalog``: batches of 8 at 32 px, one epoch a stage, 2 symbol variants.

    ``overrides`` replace any of these fields or set others.
    """
    parameters = dict(
        dataset="catalog",
        data_dir=str(catalog),
        batch_size=8,
        image_size=32,
        epochs_stage1=1,
        epochs_stage2=1,
        symbol_variants=2,
        val_fraction=0.25,
        test_fraction=0.25,
        device="cpu",
    )
    parameters.update(overrides)
    return TrainConfig(**parameters)
