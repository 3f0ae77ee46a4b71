"""Shared fixtures: a small real catalog cut from the bundled demo set, and a tiny finished run."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from small_runs import small_config

from galaxalign.data.demo import DEMO_DIR
from galaxalign.train import train

# Galaxies per class label of the Galaxy Zoo 1 schema in the small catalog.
PER_CLASS = {0: 16, 1: 8, 2: 8, 3: 8, 4: 4, 5: 4}


@pytest.fixture(scope="session")
def small_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write a 48-galaxy catalog CSV with its JPEGs copied from the demo set; return the CSV path."""
    folder = tmp_path_factory.mktemp("small_catalog")
    (folder / "images").mkdir()
    with (DEMO_DIR / "catalog.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen = []
    for label, count in PER_CLASS.items():
        chosen += [row for row in rows if int(row["label"]) == label][:count]
    for row in chosen:
        shutil.copy(DEMO_DIR / row["file"], folder / row["file"])
    catalog = folder / "catalog.csv"
    with catalog.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["objid", "file", "label", "class_name"])
        writer.writeheader()
        writer.writerows(chosen)
    return catalog


@pytest.fixture(autouse=True)
def image_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the decoded-image cache of these tests out of the user's home folder."""
    folder = tmp_path_factory.getbasetemp() / "image_cache"
    monkeypatch.setenv("GALAXALIGN_CACHE", str(folder))
    return folder


@pytest.fixture(scope="session")
def finished_run(small_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train both stages for two steps each on the small catalog at 32 px; return the run directory."""
    run_dir = tmp_path_factory.mktemp("finished_run")
    cache = tmp_path_factory.getbasetemp() / "image_cache"
    config = small_config(small_catalog, batch_size=16, max_steps=2, cache_dir=str(cache))
    train(config, run_dir=run_dir)
    return run_dir
