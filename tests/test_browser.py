"""End-to-end in a real browser: clicking a galaxy in explore.ipynb's map shows its nearest neighbours.

The test installs Debian's Chromium and the playwright package when they are
missing, serves a parameterised copy of the notebook from a private
JupyterLab on 127.0.0.1, runs it in the browser and clicks one galaxy.
Screenshots go to test-artifacts/browser/ in the repository.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import browser
import numpy as np
import pytest
from PIL import Image

from galaxalign import explore
from galaxalign.embed import read_embedding_set
from galaxalign.search import NeighbourIndex

REPOSITORY = Path(__file__).resolve().parents[1]
EXPLORE_NOTEBOOK = REPOSITORY / "notebooks" / "explore.ipynb"
ARTIFACTS = REPOSITORY / "test-artifacts" / "browser"

K = 5
EXPLORER = ".galaxalign-explorer"
PLOT = f"{EXPLORER} .js-plotly-plot"
SELECTED = f"{EXPLORER} .galaxalign-selected"
NEIGHBOURS = f"{EXPLORER} .galaxalign-neighbour"
STATUS = f"{EXPLORER} .galaxalign-status"

# Upper bounds in seconds. Running the notebook imports torch and embeds 48 galaxies at 32 px on
# the CPU, and the rest is rendering.
RENDER_TIMEOUT = 240
CLICK_TIMEOUT = 60
# The kernel must stay idle this long (milliseconds) before the page counts as settled, because
# one click can start several rounds of messages between the page and the kernel.
QUIET_MS = 1000

# Scrolls the explorer to the top of the notebook and resolves after the next two frames are drawn,
# so positions read afterwards are the scrolled ones.
SCROLL_TO_TOP_SCRIPT = """
async (element) => {
  element.scrollIntoView({block: "start"});
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
}
"""


@pytest.fixture(scope="session")
def browser_tools() -> dict[str, float]:
    """Install Chromium (apt-get, root only) and playwright (pip) when missing, and return the seconds."""
    try:
        chromium_seconds = browser.ensure_chromium()
    except PermissionError as error:
        pytest.skip(f"browser test needs Chromium: {error}")
    playwright_seconds = browser.ensure_playwright()
    print(f"install times: chromium {chromium_seconds:.1f} s, playwright {playwright_seconds:.1f} s")
    return {"chromium": chromium_seconds, "playwright": playwright_seconds}


@pytest.fixture
def lab(finished_run: Path, image_cache: Path, tmp_path: Path) -> Iterator[browser.JupyterLab]:
    """Serve a copy of explore.ipynb, parameterised for the finished run, from a private JupyterLab."""
    assert EXPLORE_NOTEBOOK.is_file(), f"{EXPLORE_NOTEBOOK} is missing"
    root_dir = tmp_path / "lab"
    root_dir.mkdir()
    browser.prepare_notebook(
        EXPLORE_NOTEBOOK,
        root_dir / "explore.ipynb",
        {"run_dir": str(finished_run), "split": "all", "maps": "tsne", "k": K, "device": "cpu"},
    )
    environment = {**os.environ, "GALAXALIGN_CACHE": str(image_cache)}
    server = browser.start_jupyterlab(root_dir, tmp_path / "jupyter", environment)
    print(f"jupyter lab responded after {server.started_in:.1f} s on {server.base_url}")
    yield server
    browser.stop_jupyterlab(server)


@pytest.fixture
def page(browser_tools: dict[str, float]) -> Iterator[tuple[Any, browser.PageRecord]]:
    """Open a page in headless Debian Chromium driven by Playwright, and yield it with its console record."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(browser.CHROMIUM), args=browser.CHROMIUM_FLAGS, timeout=60_000
        )
        try:
            context = chromium.new_context(viewport={"width": 1400, "height": 1200})
            new_page = context.new_page()
            new_page.set_default_timeout(30_000)
            record = browser.PageRecord()
            record.attach(new_page)
            yield new_page, record
        finally:
            chromium.close()


def wait_for_explorer(page: Any) -> None:
    """Wait until the explorer's map and selected panel have rendered and the kernel has settled.

    Fails at once, with the error, when a cell of the notebook raises.
    """

    def rendered() -> bool:
        errors = browser.cell_errors(page)
        if errors:
            pytest.fail(f"explore.ipynb raised in the browser: {errors}")
        plot = page.locator(PLOT)
        if plot.count() == 0 or not plot.first.evaluate(browser.PLOT_READY_SCRIPT):
            return False
        if not "".join(browser.texts(page, SELECTED)).strip():
            return False
        return browser.kernel_state(page, QUIET_MS)["settled"]

    browser.wait_until(rendered, RENDER_TIMEOUT, interval=0.5, description="the explorer to render")


def wait_for_click_handled(page: Any, idle_count: int, object_id: str) -> list[str]:
    """Wait until the kernel has handled the click and the neighbour cards settle, and return their texts.

    ``idle_count`` is the kernel's idle count before the click. The cards count
    as stable when two reads half a second apart agree.
    """

    def handled() -> bool:
        state = browser.kernel_state(page, QUIET_MS)
        return state["idleCount"] > idle_count and state["settled"]

    def selected() -> bool:
        return object_id in "".join(browser.texts(page, SELECTED))

    try:
        browser.wait_until(handled, CLICK_TIMEOUT, description="the kernel to handle the click")
        browser.wait_until(selected, CLICK_TIMEOUT, description=f"galaxy {object_id} in the selected panel")
    except TimeoutError as error:
        pytest.fail(f"{error}; status line: {browser.texts(page, STATUS)}")

    previous: list[str] = []

    def stable() -> list[str] | None:
        nonlocal previous
        current = browser.texts(page, NEIGHBOURS)
        same = current == previous
        previous = current
        return current if same and current else None

    return browser.wait_until(
        stable, CLICK_TIMEOUT, interval=0.5, description="the neighbour cards to settle"
    )


def ids_in_captions(captions: list[str], candidates: list[str]) -> list[str]:
    """Map each caption to the candidate id it contains, or to the caption itself when it contains none."""
    return [next((i for i in candidates if i in caption), caption) for caption in captions]


@pytest.mark.slow
def test_clicked_galaxy_shows_neighbours(
    lab: browser.JupyterLab, page: tuple[Any, browser.PageRecord], finished_run: Path
):
    tab, record = page
    name = "explore"
    for stale in ARTIFACTS.glob(f"{name}-*"):
        stale.unlink()
    with browser.artifacts_on_failure(tab, record, lab, ARTIFACTS, name):
        start = time.monotonic()
        browser.open_and_run_notebook(
            tab, lab.notebook_url("explore.ipynb", f"browser-{uuid.uuid4().hex[:8]}")
        )
        wait_for_explorer(tab)
        render_seconds = time.monotonic() - start

        initial_selection = "".join(browser.texts(tab, SELECTED))
        tab.locator(EXPLORER).first.evaluate(SCROLL_TO_TOP_SCRIPT)
        points = browser.plot_points(tab, PLOT)
        initial_ids = {p.object_id for p in points if p.galaxy and p.object_id in initial_selection}
        clicked = browser.most_isolated_galaxy(points, excluded_ids=initial_ids)

        start = time.monotonic()
        idle_count = browser.kernel_state(tab)["idleCount"]
        tab.mouse.move(clicked.x, clicked.y)
        tab.mouse.click(clicked.x, clicked.y)
        captions = wait_for_click_handled(tab, idle_count, clicked.object_id)
        click_seconds = time.monotonic() - start
        selection = "".join(browser.texts(tab, SELECTED))

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACTS / f"{name}-page.png"
        cropped = ARTIFACTS / f"{name}-explorer.png"
        tab.screenshot(path=str(screenshot), full_page=True)
        tab.locator(EXPLORER).first.screenshot(path=str(cropped))

        embeddings = read_embedding_set(finished_run / "embeddings" / "all")
        result = NeighbourIndex.from_embedding_set(embeddings).query_ids([clicked.object_id], k=K)
        expected = [str(object_id) for object_id in result.ids[0]]

        summary = [
            f"page load to rendered explorer {render_seconds:.1f} s",
            f"click to updated neighbours {click_seconds:.1f} s",
            f"clicked galaxy {clicked.object_id} (row {clicked.row}, class {clicked.name})",
            f"expected neighbours {expected}",
            f"neighbour cards {captions}",
            f"screenshots {screenshot} {cropped}",
        ]
        (ARTIFACTS / f"{name}-summary.txt").write_text("\n".join(summary) + "\n")
        print("\n".join(summary))

        assert initial_ids, f"no galaxy id of the map in the initial selected panel {initial_selection!r}"
        assert clicked.object_id not in initial_ids
        assert str(embeddings.ids[clicked.row]) == clicked.object_id
        assert clicked.object_id in selection
        assert len(captions) == K, captions
        assert ids_in_captions(captions, expected) == expected


def thumbnail_distances(on_page: np.ndarray, exploration: explore.Exploration) -> np.ndarray:
    """Mean absolute difference between a picture on the page and each map galaxy's thumbnail at its size."""
    side = on_page.shape[0]
    distances = []
    for thumbnail in exploration.thumbnails(exploration.map_rows):
        scaled = np.asarray(Image.fromarray(thumbnail).resize((side, side), Image.Resampling.BILINEAR))
        distances.append(np.abs(scaled.astype(float) - on_page.astype(float)).mean())
    return np.asarray(distances)


@pytest.mark.slow
def test_saved_map_shows_thumbnail_on_hover(
    page: tuple[Any, browser.PageRecord], finished_run: Path, tmp_path: Path
):
    tab, record = page
    name = "map-hover"
    for stale in ARTIFACTS.glob(f"{name}-*"):
        stale.unlink()
    exploration = explore.load_exploration(finished_run, split="all", device="cpu")
    exploration.output_dir = tmp_path / "explore"
    html, _ = explore.save_map(exploration, "pca", explore.map_figure(exploration, "pca"))

    with browser.artifacts_on_failure(tab, record, None, ARTIFACTS, name):
        tab.goto(html.as_uri(), wait_until="load")
        plot = tab.locator(".js-plotly-plot").first
        drawn = lambda: plot.evaluate(browser.PLOT_READY_SCRIPT)  # noqa: E731
        browser.wait_until(drawn, 30, description="the map to draw")
        points = browser.plot_points(tab, ".js-plotly-plot")
        hovered = browser.most_isolated_galaxy(points, excluded_ids=set())
        tab.mouse.move(hovered.x, hovered.y)
        box = tab.locator(".galaxalign-hover")
        box.wait_for(state="visible", timeout=10_000)

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"{name}-page.png"))
        picture = tab.locator(".galaxalign-hover-thumbnail")
        on_page = np.asarray(Image.open(io.BytesIO(picture.screenshot())).convert("RGB"))
        distances = thumbnail_distances(on_page, exploration)
        cell = int(np.flatnonzero(exploration.map_rows == hovered.row)[0])
        print(
            f"hovered galaxy {hovered.object_id} (row {hovered.row}); mean difference to its thumbnail "
            f"{distances[cell]:.1f}, to the next closest {np.partition(distances, 1)[1]:.1f} (0-255 scale)"
        )

        assert box.get_attribute("data-row") == str(hovered.row)
        assert tab.locator(".galaxalign-hover-id").inner_text() == hovered.object_id
        assert on_page.shape == (128, 128, 3)
        assert int(np.argmin(distances)) == cell
        assert distances[cell] < 12

        tab.mouse.move(5, 5)
        box.wait_for(state="hidden", timeout=10_000)

        # A copy of the page without its sheet shows why it has no thumbnail.
        moved = tmp_path / "moved"
        moved.mkdir()
        for name in (html.name, explore.PLOTLY_JS):
            shutil.copy(html.parent / name, moved / name)
        tab.goto((moved / html.name).as_uri(), wait_until="load")
        browser.wait_until(drawn, 30, description="the copied map to draw")
        tab.wait_for_timeout(500)
        tab.mouse.move(hovered.x, hovered.y)
        box.wait_for(state="visible", timeout=10_000)
        caption = tab.locator(".galaxalign-hover-id").inner_text()
        assert caption.startswith(f"{hovered.object_id}: no thumbnail, because map_thumbnails-")
        assert caption.endswith(".jpg is not beside this page")
        assert not picture.is_visible()
    assert not [line for line in record.lines if line.startswith("pageerror")], record.lines
