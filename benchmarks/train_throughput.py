"""Time the stage-2 training step against a straightforward one, and the batch loader against the model.

On the bundled demo set with the trainer's own model, batch and image size
(the small preset by default), it prints side by side:

* the toolkit's stage-2 step, which encodes each distinct prompt and each
  class's symbol once per step, against a straightforward step that encodes
  every galaxy's prompt and symbol (same augmentation, loss and optimizer);
* the batch loader's images per second (reading cached pixels in its
  background thread) against the images per second the model trains on.

Steps of the two kinds alternate on the same batches, so a change in the
machine's load affects both alike. The script prints ratios of the fastest
step of each kind, which other processes disturbed least, and of the medians.
On a CPU shared with busy processes the medians move towards 1, because every
operator's threads then wait for the scheduler alike.

    .venv/bin/python benchmarks/train_throughput.py [--steps 20] [--batch-size 64] [--image-size 64]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from galaxalign.data.augment import mirror_labels, normalize, sample_affine, to_float_nchw, warp_affine
from galaxalign.embed import autocast_context
from galaxalign.losses import stage2_loss
from galaxalign.train import TrainConfig, Trainer
from galaxalign.train.loader import BatchPrefetcher
from galaxalign.train.trainer import make_optimizer


def straightforward_step(
    trainer: Trainer, positions: np.ndarray, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> float:
    """One stage-2 step that encodes the prompt and a symbol variant of every galaxy; return the loss."""
    model, device = trainer.model, trainer.device
    images = torch.from_numpy(np.ascontiguousarray(trainer.data.pixels[trainer.data.rows(positions)]))
    theta, flip = sample_affine(len(positions), generator, allow_flip=trainer.schema.mirror is not None)
    labels = mirror_labels(
        torch.from_numpy(trainer.data.dataset.labels[positions]), flip, trainer.schema.mirror
    )
    pixels = normalize(warp_affine(to_float_nchw(images.to(device)), theta), trainer.normalization)
    assert trainer.symbol_bank is not None
    variants = torch.randint(trainer.symbol_bank.shape[1], (len(positions),), generator=generator)
    labels = labels.to(device)

    with autocast_context(device):
        image_features = model.encode_image(pixels)
        text_features = model.encode_text(model.prompt_tokens[labels])
        symbol_features = model.encode_symbol(trainer.symbol_bank[labels, variants.to(device)])
    loss, _ = stage2_loss(
        image_features.float(),
        symbol_features.float(),
        text_features.float(),
        model.logit_scale.exp(),
        labels,
        kind=trainer.config.loss,  # type: ignore[arg-type]
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.config.grad_clip)
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(trainer.config.max_logit_scale))
    return float(loss.detach())


def time_steps(trainer: Trainer, steps: int, seed: int) -> tuple[list[float], list[float]]:
    """Alternate toolkit and straightforward steps on the same batches; return both lists of seconds."""
    config = trainer.config
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(trainer.data.train), generator=generator).numpy()
    batches = [
        np.sort(trainer.data.train[order[i * config.batch_size : (i + 1) * config.batch_size]])
        for i in range(len(order) // config.batch_size)
    ]
    toolkit_optimizer = make_optimizer(trainer.model, config.lr, config.weight_decay)
    plain_optimizer = make_optimizer(trainer.model, config.lr, config.weight_decay)
    toolkit, plain = [], []
    warm_up = 2
    for index in range(steps + warm_up):
        batch = batches[index % len(batches)]
        started = time.perf_counter()
        trainer.train_step(2, batch, toolkit_optimizer, torch.Generator().manual_seed(index))
        middle = time.perf_counter()
        straightforward_step(trainer, batch, plain_optimizer, torch.Generator().manual_seed(index))
        ended = time.perf_counter()
        if index >= warm_up:
            toolkit.append(middle - started)
            plain.append(ended - middle)
    return toolkit, plain


def loader_images_per_second(trainer: Trainer, batches: int) -> float:
    """Read ``batches`` random batches through the prefetching loader and return images per second."""
    size = trainer.config.batch_size
    generator = np.random.default_rng(0)
    chosen = [np.sort(generator.choice(trainer.data.train, size, replace=False)) for _ in range(batches)]
    started = time.perf_counter()
    count = 0
    for _, images in BatchPrefetcher(trainer.data.pixels, trainer.data.pixel_rows, chosen):
        count += len(images)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small", help="model preset or open_clip name [small]")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each kind [20]")
    parser.add_argument("--batch-size", type=int, default=64, help="galaxies per step [64]")
    parser.add_argument("--image-size", type=int, default=64, help="model input in pixels [64]")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' [auto]")
    arguments = parser.parse_args()

    config = TrainConfig(
        model=arguments.model,
        batch_size=arguments.batch_size,
        image_size=arguments.image_size,
        device=arguments.device,
    )
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, Path(folder) / "run")
        trainer.model.split_symbol_tower()
        trainer.model.train()
        print(
            f"model {config.model}, batch {config.batch_size}, {config.image_size} px, "
            f"device {trainer.device}, {torch.get_num_threads()} threads, {len(trainer.schema.names)} classes"
        )

        toolkit, plain = time_steps(trainer, arguments.steps, seed=0)
        fastest = (min(toolkit), min(plain))
        median = (statistics.median(toolkit), statistics.median(plain))
        print("stage-2 step, seconds                                   fastest  median")
        print(f"  toolkit (each distinct prompt and symbol once)          {fastest[0]:7.3f} {median[0]:7.3f}")
        print(f"  straightforward (every galaxy's prompt and symbol)      {fastest[1]:7.3f} {median[1]:7.3f}")
        print(
            f"  ratio straightforward / toolkit                         {fastest[1] / fastest[0]:7.2f} "
            f"{median[1] / median[0]:7.2f}"
        )

        loader_rate = loader_images_per_second(trainer, batches=200)
        model_rate = config.batch_size / fastest[0]
        print(
            f"loader: {loader_rate:,.0f} images/s; model (fastest toolkit step): {model_rate:,.0f} images/s"
        )
        print(f"  ratio loader / model: {loader_rate / model_rate:.1f}")


if __name__ == "__main__":
    main()
