"""Time a click in the neighbour explorer at 20,000 galaxies, from plotly's click event to thumbnails ready.

The script builds 20,000 galaxies: clustered 512-d float32 embeddings in 6
classes, and thumbnails taken from the decoded-image cache of the bundled
demo set (5,652 real GZ1 cutouts at 64 px, reused in turn). A
NeighbourExplorer shows all of them on its PCA map. Each timed click is
dispatched as the kernel receives one from the browser: plotly's on_click
dispatch on the clicked trace runs the explorer's handler, which searches the
k = 8 neighbours, reads their thumbnails, encodes them as PNG, updates the
widgets and rings the galaxies on the map. Widget messages are built but,
with no kernel attached, not sent over ZeroMQ.

The same clicks then run with thumbnails decoded from the JPEG files, as a
tool without the cache would do. The two versions alternate in blocks of 10
clicks so that load from other processes hits both alike. The script prints
the median and 95th percentile of each, the ratio, the share of each step,
and whether the aim (median under 100 ms with the cache) is met.

    .venv/bin/python benchmarks/explorer_click.py [--galaxies 20000] [--clicks 200] [--k 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable

import numpy as np
from plotly.callbacks import InputDeviceState, Points
from tabulate import tabulate

from galaxalign.data import read_dataset
from galaxalign.data.cache import cache_images
from galaxalign.data.images import decode_image_file, resize
from galaxalign.explore import Exploration
from galaxalign.search import NeighbourIndex
from galaxalign_widgets import NeighbourExplorer
from galaxalign_widgets.cards import png_bytes

AIM_MS = 100.0
CLASSES = 6
DIM = 512
SIZE = 64
BLOCK = 10


def build_exploration(count: int, seed: int) -> tuple[Exploration, list[str]]:
    """Return an exploration of ``count`` galaxies on the demo set's cache, and each row's JPEG path."""
    demo = read_dataset("demo", None)
    with tempfile.TemporaryDirectory() as cache_dir:
        cached = cache_images(demo, SIZE, cache_dir=cache_dir)
        pixels = np.array(cached.array)
    files = [str(demo.describe(i)) for i in range(len(demo))]

    generator = np.random.default_rng(seed)
    labels = generator.integers(0, CLASSES, size=count)
    centres = generator.normal(size=(CLASSES, DIM))
    vectors = (centres[labels] + 1.5 * generator.normal(size=(count, DIM))).astype(np.float32)
    ids = np.array([f"{587_700_000_000_000_000 + i}" for i in range(count)])
    names = [f"class_{label}" for label in range(CLASSES)]
    pixel_rows = np.arange(count) % len(pixels)
    exploration = Exploration(
        ids=ids,
        labels=labels.astype(np.int64),
        class_names=names,
        index=NeighbourIndex(vectors, ids, labels=labels, class_names=names, backend="exact"),
        pixels=pixels,
        pixel_rows=pixel_rows,
        map_rows=np.arange(count),
        predicted=labels.astype(np.int64),
    )
    return exploration, [files[row] for row in pixel_rows]


def jpeg_thumbnails(files: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    """Return a thumbnail reader that decodes and resizes each JPEG file at every call."""

    def read(rows: np.ndarray) -> np.ndarray:
        return np.stack([resize(decode_image_file(files[int(row)]), SIZE) for row in np.atleast_1d(rows)])

    return read


def click_trace(explorer: NeighbourExplorer, row: int) -> Callable[[], None]:
    """Return a function that dispatches a click on galaxy ``row`` as the browser's click message does."""
    for position, rows in explorer._trace_rows.items():
        found = np.flatnonzero(rows == row)
        if found.size:
            trace = explorer.figure.data[position]
            points = Points(
                point_inds=[int(found[0])], xs=[0.0], ys=[0.0], trace_name=trace.name, trace_index=position
            )
            state = InputDeviceState(ctrl=False, alt=False, shift=False, meta=False, button=0, buttons=1)
            return lambda: trace._dispatch_on_click(points, state)
    raise ValueError(f"galaxy {row} is not on the map")


def time_steps(exploration: Exploration, rows: np.ndarray, k: int) -> dict[str, float]:
    """Median milliseconds of the handler's steps, each timed alone over the same clicked rows."""
    names = ("neighbour search", "thumbnail lookup (cache)", "PNG encoding")
    times: dict[str, list[float]] = {name: [] for name in names}
    for row in rows[:50]:
        begin = time.perf_counter()
        result = exploration.neighbours(int(row), k)
        searched = time.perf_counter()
        images = exploration.thumbnails(np.concatenate([[row], result.rows[0]]))
        looked_up = time.perf_counter()
        for image in images:
            png_bytes(image)
        encoded = time.perf_counter()
        times["neighbour search"].append((searched - begin) * 1000)
        times["thumbnail lookup (cache)"].append((looked_up - searched) * 1000)
        times["PNG encoding"].append((encoded - looked_up) * 1000)
    return {name: float(np.median(values)) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--galaxies", type=int, default=20_000, help="galaxies in the explorer")
    parser.add_argument("--clicks", type=int, default=200, help="timed clicks per version")
    parser.add_argument("--k", type=int, default=8, help="neighbours shown per click")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    machine = platform.processor() or platform.machine()
    print(f"{machine}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    start = time.perf_counter()
    exploration, files = build_exploration(arguments.galaxies, arguments.seed)
    explorer = NeighbourExplorer(exploration, k=arguments.k, method="pca", thumbnail_px=96)
    print(f"built {arguments.galaxies} galaxies and the explorer in {time.perf_counter() - start:.1f} s")

    generator = np.random.default_rng(arguments.seed + 1)
    rows = generator.choice(arguments.galaxies, size=arguments.clicks, replace=False)
    clicks = [click_trace(explorer, int(row)) for row in rows]
    cached_reader = exploration.thumbnails
    jpeg_reader = jpeg_thumbnails(files)
    # One untimed click per version warms caches and lazily built indexes.
    clicks[0]()

    times: dict[str, list[float]] = {"decoded-image cache": [], "JPEG files": []}
    for block in range(0, len(clicks), BLOCK):
        for name, reader in (("decoded-image cache", cached_reader), ("JPEG files", jpeg_reader)):
            exploration.thumbnails = reader  # type: ignore[method-assign]
            for click, row in zip(clicks[block : block + BLOCK], rows[block : block + BLOCK], strict=True):
                begin = time.perf_counter()
                click()
                times[name].append((time.perf_counter() - begin) * 1000)
                assert explorer.selected_row == row, "the click did not select its galaxy"
    exploration.thumbnails = cached_reader  # type: ignore[method-assign]

    table = [
        [name, len(values), np.median(values), np.percentile(values, 95)] for name, values in times.items()
    ]
    print()
    print(f"click → {arguments.k} neighbour thumbnails ready, {arguments.galaxies} galaxies (ms)")
    print(tabulate(table, headers=["thumbnails from", "clicks", "median", "p95"], floatfmt=".1f"))
    cached_median = float(np.median(times["decoded-image cache"]))
    ratio = float(np.median(times["JPEG files"])) / cached_median
    print(f"\nJPEG files / decoded-image cache (median): {ratio:.2f}")

    steps = time_steps(exploration, rows, arguments.k)
    print("\nsteps of one click, timed alone (median ms, share of the cached click's median)")
    print(
        tabulate(
            [[name, value, value / cached_median] for name, value in steps.items()],
            headers=["step", "ms", "share"],
            floatfmt=(".1f", ".2f", ".0%"),
        )
    )
    verdict = "met" if cached_median < AIM_MS else "NOT met"
    print(f"\naim: median under {AIM_MS:.0f} ms with the cache: {cached_median:.1f} ms, {verdict}")


if __name__ == "__main__":
    main()
