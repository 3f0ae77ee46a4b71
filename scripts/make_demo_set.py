"""Build the bundled demo set galaxalign/data/demo/ from the Galaxy Zoo 1 SDSS cutouts.

Input: a folder with ``catalog.csv`` (columns objid, file, label, class_name)
and the 423x423 SDSS colour JPEG cutouts it names; by default
``../shared/data/gz1-sdss`` beside the repository. Every galaxy is kept.

Each cutout is cropped to its central 212x212 pixels, because the galaxy
fills roughly the central third of the cutout and the rest is sky and
neighbours. The crop is resized to 96x96 with Lanczos resampling and saved
as a JPEG with 4:4:4 chroma (no colour subsampling). The JPEG quality is
the highest in 50..95 whose images, catalog and README together fit the size
budget of --budget-bytes (default 18,000,000 bytes). The script finds it by
encoding every image in memory, unless --quality sets it. The script writes
``catalog.csv`` (same columns, files renamed to ``images/<objid>.jpeg``),
``images/`` and ``README.md`` with the credits and the numbers measured.
For the same input and Pillow version the output is the same byte for byte.

Usage: python scripts/make_demo_set.py [--source DIR] [--dest DIR] [--quality Q]
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from galaxalign.data.images import decode_image_file, resize

logger = logging.getLogger("make_demo_set")

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPOSITORY.parent / "shared" / "data" / "gz1-sdss"
DEFAULT_DEST = REPOSITORY / "galaxalign" / "data" / "demo"
COLUMNS = ["objid", "file", "label", "class_name"]
CROP_PIXELS = 212
SIZE_PIXELS = 96
BUDGET_BYTES = 18_000_000
QUALITY_RANGE = (50, 95)

README_TEMPLATE = """\
# Demo set: {count:,} Galaxy Zoo 1 galaxies in SDSS colour

Small colour cutouts of real galaxies with volunteer labels, bundled so that
galaxalign can be tried without a download: `load_demo()` reads them.

`catalog.csv` has the columns `objid,file,label,class_name`: the SDSS objid,
the cutout's path relative to this folder, and the most specific leaf of the
Galaxy Zoo 1 decision tree that the volunteers chose.

| label | class_name | count |
|---|---|---|
{class_table}

Clockwise and anticlockwise describe how the arms wind on the sky, so a
mirror flip turns one into the other. "dont_know" is "star or don't know" and
includes broken cutouts. About 70% of the galaxies are elliptical: report
macro F1 beside accuracy and split with stratification. There is no canonical
train/test split.

## How the images were made

`scripts/make_demo_set.py` built this folder from the SDSS colour cutouts of
423x423 pixels distributed with Galaxy Zoo 1. Each cutout was cropped to its
central {crop}x{crop} pixels, because the galaxy fills roughly the central
third of the cutout and the rest is sky, field stars and neighbours. The crop
was resized to {size}x{size} pixels with Lanczos resampling and saved as JPEG
at quality {quality} with 4:4:4 chroma. The images take {image_bytes:,} bytes,
{mean_bytes:,.0f} bytes per galaxy on average.

## Credits

Galaxy Zoo 1: Lintott et al. 2008, MNRAS 389, 1179; Lintott et al. 2011,
MNRAS 410, 166. Images: the Sloan Digital Sky Survey (SDSS).
"""


def read_catalog_rows(source: Path) -> list[dict[str, str]]:
    with open(source / "catalog.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SystemExit(f"{source / 'catalog.csv'} lacks the columns {missing}")
        return list(reader)


def shrink_cutout(path: Path) -> np.ndarray:
    """Return the central CROP_PIXELS square of the cutout at ``path``, resized to SIZE_PIXELS."""
    image = decode_image_file(path)
    height, width = image.shape[:2]
    if height < CROP_PIXELS or width < CROP_PIXELS:
        raise SystemExit(f"{path} is {width}x{height} pixels, smaller than the {CROP_PIXELS}-pixel crop")
    top = (height - CROP_PIXELS) // 2
    left = (width - CROP_PIXELS) // 2
    return resize(image[top : top + CROP_PIXELS, left : left + CROP_PIXELS], SIZE_PIXELS)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality, optimize=True, subsampling=0)
    return buffer.getvalue()


def encode_all(images: list[np.ndarray], quality: int, pool: ThreadPoolExecutor) -> list[bytes]:
    return list(pool.map(lambda image: encode_jpeg(image, quality), images))


def choose_quality(images: list[np.ndarray], budget: int, pool: ThreadPoolExecutor) -> int:
    """Return the highest quality in QUALITY_RANGE whose JPEGs fit ``budget`` bytes (binary search)."""
    low, high = QUALITY_RANGE
    best = None
    while low <= high:
        quality = (low + high) // 2
        total = sum(len(data) for data in encode_all(images, quality, pool))
        logger.info("quality %d: %d bytes", quality, total)
        if total <= budget:
            best, low = quality, quality + 1
        else:
            high = quality - 1
    if best is None:
        raise SystemExit(f"even quality {QUALITY_RANGE[0]} exceeds the budget of {budget} bytes")
    return best


def write_catalog(rows: list[dict[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row["objid"], f"images/{row['objid']}.jpeg", row["label"], row["class_name"]])
    return buffer.getvalue().encode()


def make_readme(rows: list[dict[str, str]], quality: int, image_bytes: int) -> bytes:
    counts: dict[tuple[int, str], int] = {}
    for row in rows:
        key = (int(row["label"]), row["class_name"])
        counts[key] = counts.get(key, 0) + 1
    table = "\n".join(f"| {label} | {name} | {count:,} |" for (label, name), count in sorted(counts.items()))
    text = README_TEMPLATE.format(
        count=len(rows),
        class_table=table,
        crop=CROP_PIXELS,
        size=SIZE_PIXELS,
        quality=quality,
        image_bytes=image_bytes,
        mean_bytes=image_bytes / len(rows),
    )
    return text.encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE, help="folder with catalog.csv and the cutouts"
    )
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="folder to write the demo set to")
    parser.add_argument(
        "--quality", type=int, default=None, help="JPEG quality 1..95 (default: the highest that fits)"
    )
    parser.add_argument("--budget-bytes", type=int, default=BUDGET_BYTES, help="maximum total size in bytes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = read_catalog_rows(args.source)
    objids = [row["objid"] for row in rows]
    if len(set(objids)) != len(objids):
        raise SystemExit(f"{args.source / 'catalog.csv'} repeats object ids")
    logger.info("shrinking %d cutouts from %s", len(rows), args.source)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        images = list(pool.map(lambda row: shrink_cutout(args.source / row["file"]), rows))
        catalog = write_catalog(rows)
        # The README's length barely depends on the numbers in it; 200 bytes cover the difference.
        fixed_bytes = len(catalog) + len(make_readme(rows, 95, 0)) + 200
        quality = args.quality or choose_quality(images, args.budget_bytes - fixed_bytes, pool)
        jpegs = encode_all(images, quality, pool)

    image_dir = args.dest / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for old in image_dir.glob("*.jpeg"):
        old.unlink()
    for objid, data in zip(objids, jpegs, strict=True):
        (image_dir / f"{objid}.jpeg").write_bytes(data)
    (args.dest / "catalog.csv").write_bytes(catalog)
    image_bytes = sum(len(data) for data in jpegs)
    readme = make_readme(rows, quality, image_bytes)
    (args.dest / "README.md").write_bytes(readme)

    total = image_bytes + len(catalog) + len(readme)
    logger.info(
        "wrote %d galaxies to %s: quality %d, %d bytes in all (%d bytes of images)",
        len(rows),
        args.dest,
        quality,
        total,
        image_bytes,
    )


if __name__ == "__main__":
    main()
