"""Time the main job on the bundled demo set and compare it with a ResNet-18 trained from scratch.

Runs ``notebooks/train.ipynb`` through papermill with its default parameters
(as ``make demo`` does) and a fresh image cache, measuring the wall time.
Then trains a randomly initialised torchvision ResNet-18 classifier on the
same split, the same cached 64-px images and the same rotation/flip
augmentation, with cross-entropy and AdamW (peak learning rate 1e-3, warm-up
and cosine decay over the time budget), for the same wall time, and prints
both results side by side with their ratios.

    .venv/bin/python benchmarks/demo_vs_resnet18.py [--out runs/bench] [-p name value ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import papermill
import torch
import torch.nn.functional as F
import torchvision

from galaxalign.data import cache_images, read_dataset
from galaxalign.data.augment import normalize, random_affine, to_float_nchw
from galaxalign.data.split import Split
from galaxalign.metrics import classification_metrics, retrieval_metrics
from galaxalign.models import ImageNormalization

REPOSITORY = Path(__file__).resolve().parents[1]
IMAGENET = ImageNormalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def run_main_job(run_dir: Path, cache_dir: Path, parameters: dict[str, object]) -> float:
    os.environ["GALAXALIGN_CACHE"] = str(cache_dir)
    started = time.perf_counter()
    papermill.execute_notebook(
        str(REPOSITORY / "notebooks" / "train.ipynb"),
        str(run_dir / "train.ipynb"),
        parameters={"run_dir": str(run_dir), **parameters},
        progress_bar=False,
    )
    return time.perf_counter() - started


def embed_and_predict(
    model: torch.nn.Module, pixels: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the 512-d pooled features and the predicted labels of the galaxies at cache ``rows``."""
    model.eval()
    features, predictions = [], []
    trunk = torch.nn.Sequential(*list(model.children())[:-1])
    with torch.no_grad():
        for start in range(0, len(rows), 256):
            batch = torch.from_numpy(np.ascontiguousarray(pixels[rows[start : start + 256]]))
            inputs = normalize(to_float_nchw(batch), IMAGENET)
            pooled = trunk(inputs).flatten(1)
            features.append(pooled.numpy())
            predictions.append(model.fc(pooled).argmax(1).numpy())
    return np.concatenate(features), np.concatenate(predictions)


def set_learning_rate(optimizer: torch.optim.Optimizer, peak: float, progress: float) -> None:
    """Warm up linearly over the first 5% of the time budget, then decay by a cosine to zero.

    The schedule follows elapsed time, not steps, because the baseline gets a
    wall-time budget rather than an epoch count.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < 0.05:
        factor = progress / 0.05
    else:
        factor = 0.5 * (1 + math.cos(math.pi * (progress - 0.05) / 0.95))
    for group in optimizer.param_groups:
        group["lr"] = peak * factor


def train_resnet18(run_dir: Path, budget_seconds: float, seed: int = 0) -> dict[str, float]:
    config = json.loads((run_dir / "config.json").read_text())["parameters"]
    dataset = read_dataset(config["dataset"], config["data_dir"])
    cached = cache_images(dataset, size=config["image_size"], crop_fraction=config["crop_fraction"])
    split = Split.load(run_dir / "split.json")
    train, _, test = split.indices(dataset)
    labels = dataset.labels
    rows = np.asarray(cached.kept)

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=len(dataset.schema))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    batch_size = config["batch_size"]
    started = time.perf_counter()
    epochs = 0
    while time.perf_counter() - started < budget_seconds:
        set_learning_rate(optimizer, 1e-3, (time.perf_counter() - started) / budget_seconds)
        model.train()
        order = torch.randperm(len(train), generator=generator).numpy()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            positions = np.sort(train[order[start : start + batch_size]])
            images = torch.from_numpy(np.ascontiguousarray(cached.array[rows[positions]]))
            targets = torch.from_numpy(labels[positions])
            pixels, targets = random_affine(to_float_nchw(images), targets, dataset.schema.mirror, generator)
            loss = F.cross_entropy(model(normalize(pixels, IMAGENET)), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            set_learning_rate(optimizer, 1e-3, (time.perf_counter() - started) / budget_seconds)
            if time.perf_counter() - started >= budget_seconds:
                break
        epochs += 1

    features, predicted = embed_and_predict(model, cached.array, rows[test])
    scores = classification_metrics(labels[test], predicted, dataset.schema.names)
    retrieval = retrieval_metrics(features, labels[test], k=5)
    return {
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "map_at_5": retrieval["map_at_5"],
        "map": retrieval["map"],
        "epochs": epochs,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: a new temporary one)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the finished main job in --out (its recorded wall time) and train only the baseline",
    )
    parser.add_argument(
        "-p",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="notebook parameter, as with papermill (value parsed as JSON, else text)",
    )
    args = parser.parse_args()

    parameters: dict[str, object] = {}
    for name, value in args.p:
        try:
            parameters[name] = json.loads(value)
        except json.JSONDecodeError:
            parameters[name] = value
    run_dir = args.out or Path(tempfile.mkdtemp(prefix="galaxalign-bench-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(tempfile.mkdtemp(prefix="galaxalign-cache-"))

    timing_file = run_dir / "benchmark_seconds.json"
    if args.reuse:
        seconds = json.loads(timing_file.read_text())["main_job_seconds"]
    else:
        seconds = run_main_job(run_dir, cache_dir, parameters)
        timing_file.write_text(json.dumps({"main_job_seconds": seconds}) + "\n")
    ours = json.loads((run_dir / "metrics.json").read_text())
    baseline = train_resnet18(run_dir, budget_seconds=seconds)

    print(f"main job (train.ipynb, {parameters or 'defaults'}): {seconds:.0f} s wall time, run in {run_dir}")
    print(f"ResNet-18 from scratch: {baseline['seconds']:.0f} s, {baseline['epochs']} epochs")
    print(f"{'metric':<10} {'galaxalign':>11} {'ResNet-18':>10} {'ratio':>7}")
    for key in ("accuracy", "macro_f1", "map_at_5", "map"):
        ratio = ours[key] / baseline[key] if baseline[key] > 0 else float("inf")
        print(f"{key:<10} {ours[key]:>11.3f} {baseline[key]:>10.3f} {ratio:>7.2f}")


if __name__ == "__main__":
    main()
