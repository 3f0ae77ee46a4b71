"""Helpers for the real-browser test: install Chromium and Playwright, run JupyterLab, drive the page."""

from __future__ import annotations

import importlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")

# Flags that keep headless Chromium from contacting Google services and from needing a GPU or a
# sandbox (the test runs as root in CI). WebGL, which plotly's Scattergl traces need, still
# renders in software with them.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Upper bounds, in seconds, for each step that waits on something outside the test process.
APT_TIMEOUT = 1200
PIP_TIMEOUT = 600
SERVER_START_TIMEOUT = 60
SERVER_STOP_TIMEOUT = 20
PAGE_LOAD_TIMEOUT = 60
KERNEL_START_TIMEOUT = 60


def ensure_chromium() -> float:
    """Install Debian's chromium package when /usr/bin/chromium is missing, and return the seconds spent.

    Raises RuntimeError when apt-get fails, and PermissionError when chromium
    is missing and the process is not root (the caller decides to skip).
    """
    if CHROMIUM.exists():
        return 0.0
    if os.geteuid() != 0:
        raise PermissionError(f"{CHROMIUM} is missing and only root can run apt-get install chromium")
    start = time.monotonic()
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        result = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed with exit code {result.returncode}:\n{result.stderr[-4000:]}"
            )
    if not CHROMIUM.exists():
        raise RuntimeError(f"apt-get install chromium succeeded but {CHROMIUM} does not exist")
    return time.monotonic() - start


def ensure_playwright() -> float:
    """Pip-install the playwright package into this interpreter when it is missing, and return the seconds.

    Only the Python package is installed. ``playwright install`` is never run
    because it downloads browser builds. The test drives Debian's Chromium instead.
    """
    try:
        importlib.import_module("playwright")
        return 0.0
    except ImportError:
        pass
    start = time.monotonic()
    command = [sys.executable, "-m", "pip", "install", "playwright"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed with exit code {result.returncode}:\n{result.stderr[-4000:]}"
        )
    importlib.invalidate_caches()
    importlib.import_module("playwright")
    return time.monotonic() - start


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Requests go straight to the loopback server even when the environment names an HTTP proxy.
_LOOPBACK_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request_json(url: str, method: str = "GET", timeout: float = 5.0) -> Any:
    """Send one HTTP request to the local server and return the decoded JSON body (None when empty)."""
    with _LOOPBACK_OPENER.open(urllib.request.Request(url, method=method), timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


@dataclass
class JupyterLab:
    """A JupyterLab server on 127.0.0.1 with its own token, settings and runtime folders under ``home``.

    ``process`` is the server process itself (no shell in between), so its PID
    is the one to stop. ``log`` is the file that contains the server's stdout and
    stderr, kernel tracebacks included.
    """

    root_dir: Path
    home: Path
    port: int
    token: str
    process: subprocess.Popen[bytes]
    log: Path
    started_in: float = field(default=0.0)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, method: str = "GET") -> Any:
        """Call the server's REST API at ``path`` (for example "/api/status") with the token."""
        return request_json(f"{self.base_url}{path}?token={self.token}", method=method)

    def notebook_url(self, notebook: str, workspace: str) -> str:
        """Return the URL that opens ``notebook`` (relative to root_dir) in a fresh, named workspace."""
        return f"{self.base_url}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"

    def log_tail(self, characters: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-characters:] if self.log.exists() else ""


# JupyterLab settings of the test's server, by plugin. Without windowing every cell of a notebook
# stays in the DOM. The news setting turns off the pop-up about the Jupyter news feed, which
# otherwise covers the bottom right corner of the page.
USER_SETTINGS: dict[str, dict[str, str]] = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
}


def start_jupyterlab(root_dir: Path, home: Path, environment: dict[str, str]) -> JupyterLab:
    """Start ``jupyter lab`` serving ``root_dir`` and wait until /api/status responds.

    The server listens on a free port of 127.0.0.1 only, with a random token,
    and is configured not to fetch news, check for updates or list extensions from
    a registry. Its settings, workspaces and runtime files live under
    ``home``, so earlier sessions on the machine cannot change what the page
    shows. USER_SETTINGS apply, and the page exposes the application as
    ``window.jupyterapp`` so the test can run commands and read cell outputs.
    Raises RuntimeError, with the end of the server log, when the server
    exits or does not answer within SERVER_START_TIMEOUT seconds.
    """
    settings = home / "user-settings"
    for plugin, values in USER_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    for name in ("workspaces", "runtime", "ipython"):
        (home / name).mkdir(parents=True, exist_ok=True)

    port = free_port()
    token = secrets.token_hex(24)
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--no-browser",
        "--allow-root",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.expose_app_in_browser=True",
    ]
    server_environment = {
        **environment,
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    log = home / "jupyterlab.log"
    start = time.monotonic()
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=root_dir, env=server_environment, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = JupyterLab(root_dir=root_dir, home=home, port=port, token=token, process=process, log=log)

    deadline = start + SERVER_START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"jupyter lab exited with code {process.returncode} before responding. Its log:\n"
                f"{server.log_tail()}"
            )
        try:
            server.api("/api/status")
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            stop_jupyterlab(server)
            raise RuntimeError(
                f"jupyter lab did not respond at {server.base_url}/api/status within "
                f"{SERVER_START_TIMEOUT} s. Its log:\n{server.log_tail()}"
            )
        time.sleep(0.25)
    server.started_in = time.monotonic() - start
    return server


def stop_jupyterlab(server: JupyterLab) -> None:
    """Shut down the server's kernels through the REST API, then terminate the server (kill if it hangs)."""
    if server.process.poll() is None:
        try:
            for session in server.api("/api/sessions"):
                server.api(f"/api/sessions/{session['id']}", method="DELETE")
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            pass
    server.process.terminate()
    try:
        server.process.wait(timeout=SERVER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=SERVER_STOP_TIMEOUT)


def prepare_notebook(source: Path, target: Path, parameters: dict[str, Any]) -> None:
    """Write a copy of ``source`` to ``target`` with papermill's parameters cell injected but nothing run."""
    import papermill

    papermill.execute_notebook(
        str(source), str(target), parameters=parameters, prepare_only=True, progress_bar=False
    )


# Reads a plotly plot in the page: the pixel position (viewport coordinates) of every point of
# every scatter trace, and for the galaxy traces (meta "galaxies") the row and object id from
# customdata. Points outside the axis ranges come back with inside=false. A point is reachable
# when the topmost element at its position is the plot's drag layer, because plotly turns a click
# on that layer into a click on the nearest point. The mode bar or a hover label may cover others.
POINTS_SCRIPT = """
(plot) => {
  const layout = plot._fullLayout;
  const box = plot.getBoundingClientRect();
  const xaxis = layout.xaxis;
  const yaxis = layout.yaxis;
  const points = [];
  plot.data.forEach((input, traceIndex) => {
    // A page written by plotly.py holds numeric arrays base64-encoded; the full data has them decoded.
    const full = plot._fullData[traceIndex];
    const trace = full || input;
    if (!trace.x || !trace.y || (full && full.visible !== true)) {
      return;
    }
    const galaxy = input.meta === "galaxies";
    for (let i = 0; i < trace.x.length; i++) {
      const px = xaxis.l2p(xaxis.d2l(trace.x[i]));
      const py = yaxis.l2p(yaxis.d2l(trace.y[i]));
      const customdata = galaxy && trace.customdata ? trace.customdata[i] : null;
      const x = box.left + xaxis._offset + px;
      const y = box.top + yaxis._offset + py;
      const top = document.elementFromPoint(x, y);
      points.push({
        trace: traceIndex,
        name: trace.name === undefined ? null : String(trace.name),
        galaxy: galaxy,
        index: i,
        x: x,
        y: y,
        inside: px >= 0 && px <= xaxis._length && py >= 0 && py <= yaxis._length,
        reachable: Boolean(top && plot.contains(top) && top.classList.contains("nsewdrag")),
        row: customdata ? Number(customdata[0]) : null,
        objectId: customdata ? String(customdata[1]) : null,
      });
    }
  });
  return points;
}
"""


@dataclass(frozen=True)
class PlotPoint:
    """One point of the explorer's map: viewport pixel position and, for galaxies, row and object id."""

    trace: int
    name: str | None
    galaxy: bool
    index: int
    x: float
    y: float
    inside: bool
    reachable: bool
    row: int | None
    object_id: str | None


def plot_points(page: Any, plot_selector: str) -> list[PlotPoint]:
    """Return every point of the scatter traces of the plotly plot at ``plot_selector``."""
    raw = page.locator(plot_selector).first.evaluate(POINTS_SCRIPT)
    return [
        PlotPoint(
            trace=point["trace"],
            name=point["name"],
            galaxy=point["galaxy"],
            index=point["index"],
            x=point["x"],
            y=point["y"],
            inside=point["inside"],
            reachable=point["reachable"],
            row=point["row"],
            object_id=point["objectId"],
        )
        for point in raw
    ]


def most_isolated_galaxy(points: list[PlotPoint], excluded_ids: set[str]) -> PlotPoint:
    """Return the galaxy point farthest, in pixels, from every other point of any trace.

    plotly sends a click to the point nearest the cursor, so the isolated
    point is the one a click at its position selects without doubt. Points
    outside the axis ranges or not reachable, and galaxies in ``excluded_ids``,
    are never chosen.
    """
    candidates = [
        p for p in points if p.galaxy and p.inside and p.reachable and p.object_id not in excluded_ids
    ]
    if not candidates:
        raise ValueError(f"no galaxy other than {sorted(excluded_ids)} is inside the axes and reachable")

    def gap(candidate: PlotPoint) -> float:
        others = [p for p in points if (p.trace, p.index) != (candidate.trace, candidate.index)]
        return min(((p.x - candidate.x) ** 2 + (p.y - candidate.y) ** 2) ** 0.5 for p in others)

    return max(candidates, key=gap)


def wait_until(condition: Any, timeout: float, interval: float = 0.25, description: str = "condition") -> Any:
    """Call ``condition`` until it returns a true value and return that value.

    Raises TimeoutError naming ``description`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {description}")
        time.sleep(interval)


@dataclass
class PageRecord:
    """Console messages and uncaught errors of one page, in the order they happened."""

    lines: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", lambda message: self.lines.append(f"console.{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.lines.append(f"pageerror: {error}"))


@contextmanager
def artifacts_on_failure(
    page: Any, record: PageRecord, server: JupyterLab | None, folder: Path, name: str
) -> Iterator[None]:
    """Save a screenshot, the console messages and the server log to ``folder`` if the block raises.

    ``server`` is None for a page that no JupyterLab serves, such as a saved map opened as a file.
    """
    try:
        yield
    # pytest.fail raises an exception that does not derive from Exception.
    except BaseException:
        folder.mkdir(parents=True, exist_ok=True)
        screenshot = folder / f"{name}-failure.png"
        try:
            page.screenshot(path=str(screenshot), full_page=True, timeout=20_000)
        except Exception as error:  # noqa: BLE001 - the original failure matters more than this one
            record.lines.append(f"screenshot failed: {error}")
        (folder / f"{name}-console.log").write_text("\n".join(record.lines) + "\n")
        if server is not None and server.log.exists():
            shutil.copy(server.log, folder / f"{name}-jupyterlab.log")
        print(f"browser test failed; screenshot, console messages and any server log are in {folder}")
        raise


# Starts running every cell of the notebook in the current tab once its kernel is ready, without
# waiting for the cells to finish. From then on window.galaxalignKernel counts the kernel's returns
# to idle, so the test can tell when the kernel has finished handling a click. The promise rejects
# after `limit` milliseconds so that a kernel that never starts cannot stall the test.
RUN_ALL_SCRIPT = """
async (limit) => {
  const start = async () => {
    const app = window.jupyterapp;
    await app.started;
    await app.restored;
    const panel = app.shell.currentWidget;
    await panel.context.ready;
    await panel.sessionContext.ready;
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    if (!kernel) {
      throw new Error("the notebook has no kernel; check its kernelspec metadata");
    }
    const tracker = {idleCount: 0, status: kernel.status, changedAt: performance.now(), runError: null};
    kernel.statusChanged.connect((_, status) => {
      tracker.status = status;
      tracker.changedAt = performance.now();
      if (status === "idle") {
        tracker.idleCount += 1;
      }
    });
    window.galaxalignKernel = tracker;
    app.commands.execute("notebook:run-all-cells").catch((error) => {
      tracker.runError = String(error);
    });
  };
  const expire = new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`the notebook's kernel was not ready after ${limit} ms`)), limit)
  );
  await Promise.race([start(), expire]);
}
"""

# True once the current tab is a notebook with a session context.
NOTEBOOK_OPEN_SCRIPT = """
() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  return Boolean(panel && panel.sessionContext && panel.content && panel.content.model);
}
"""

# The error outputs of the notebook's cells so far as "cell N: ename: evalue" strings (N counts from 1,
# as JupyterLab's status bar does), and the error of the run-all command if it failed.
CELL_ERRORS_SCRIPT = """
() => {
  const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
  const errors = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== "code") {
      continue;
    }
    for (const output of cell.outputs.toJSON()) {
      if (output.output_type === "error") {
        errors.push(`cell ${i + 1}: ${output.ename}: ${output.evalue}`);
      }
    }
  }
  if (window.galaxalignKernel && window.galaxalignKernel.runError) {
    errors.push(`run all cells: ${window.galaxalignKernel.runError}`);
  }
  return errors;
}
"""

# The kernel's idle count, and whether it has been idle for at least `quiet` milliseconds.
KERNEL_STATE_SCRIPT = """
(quiet) => {
  const tracker = window.galaxalignKernel;
  const settled = tracker.status === "idle" && performance.now() - tracker.changedAt >= quiet;
  return {idleCount: tracker.idleCount, settled: settled, status: tracker.status};
}
"""

# True once a plot div of galaxalign's maps has laid out its axes and contains galaxy traces.
PLOT_READY_SCRIPT = """
(plot) => Boolean(
  plot._fullLayout && plot._fullLayout.xaxis && plot._fullLayout.xaxis.l2p && plot.data &&
  plot.data.some((trace) => trace.meta === "galaxies")
)
"""


def open_and_run_notebook(page: Any, url: str) -> None:
    """Load the notebook at ``url`` and start running all of its cells (returns before they finish)."""
    page.goto(url, wait_until="domcontentloaded", timeout=PAGE_LOAD_TIMEOUT * 1000)
    page.wait_for_function(NOTEBOOK_OPEN_SCRIPT, timeout=PAGE_LOAD_TIMEOUT * 1000)
    page.evaluate(RUN_ALL_SCRIPT, KERNEL_START_TIMEOUT * 1000)


def kernel_state(page: Any, quiet_ms: int = 1000) -> dict[str, Any]:
    """Return the idle count and whether the kernel has been idle for ``quiet_ms`` (see RUN_ALL_SCRIPT)."""
    return page.evaluate(KERNEL_STATE_SCRIPT, quiet_ms)


def cell_errors(page: Any) -> list[str]:
    """Return the error outputs of the notebook's cells, "cell N: ename: evalue" each."""
    return page.evaluate(CELL_ERRORS_SCRIPT)


def texts(page: Any, selector: str) -> list[str]:
    """Return the rendered text of every element matching ``selector``, in DOM order."""
    return page.locator(selector).all_inner_texts()
