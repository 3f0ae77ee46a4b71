from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from galaxalign.data.demo import DEMO_DIR, load_demo
from galaxalign.data.images import center_crop, decode_image_file, resize
from galaxalign.schema import GZ1

GZ1_COUNTS = {
    "elliptical": 3931,
    "spiral_clockwise": 345,
    "spiral_anticlockwise": 371,
    "edge_on": 852,
    "dont_know": 49,
    "merger": 104,
}


def test_demo_has_all_galaxies():
    dataset = load_demo()
    assert len(dataset) == 5652
    assert dataset.schema is GZ1
    assert dataset.class_counts() == GZ1_COUNTS
    assert dataset.source == str(DEMO_DIR / "catalog.csv")


def test_demo_images_are_96_pixel_rgb():
    dataset = load_demo()
    for position in (0, 1000, 5651):
        image = dataset.load_image(position)
        assert image.shape == (96, 96, 3)
        assert image.dtype == np.uint8
        assert image.std() > 5


def test_demo_fits_size_budget():
    files = [DEMO_DIR / "catalog.csv", DEMO_DIR / "README.md", *(DEMO_DIR / "images").iterdir()]
    assert len(files) == 5652 + 2
    assert sum(path.stat().st_size for path in files) <= 18_000_000


def test_demo_readme_credits_sources():
    text = (DEMO_DIR / "README.md").read_text()
    assert "Lintott et al. 2008, MNRAS 389, 1179" in text
    assert "Lintott et al. 2011,\nMNRAS 410, 166" in text or "Lintott et al. 2011, MNRAS 410, 166" in text
    assert "Sloan Digital Sky Survey" in text
    assert "212x212" in text


def test_demo_matches_original_cutouts(shared_data: Path):
    source = shared_data / "gz1-sdss"
    with open(source / "catalog.csv", newline="") as handle:
        original = list(csv.DictReader(handle))
    dataset = load_demo()

    assert dataset.ids.tolist() == [row["objid"] for row in original]
    assert dataset.labels.tolist() == [int(row["label"]) for row in original]
    for position in (3, 2500):
        cutout = decode_image_file(source / original[position]["file"])
        expected = resize(center_crop(cutout, 212 / 423), 96).astype(np.int16)
        difference = np.abs(dataset.load_image(position).astype(np.int16) - expected)
        # The quality-93 JPEGs differ from the source by under one grey level on average.
        # A crop to 0.4 of the cutout instead of 0.5 differs by 7 or more.
        assert difference.mean() < 3
