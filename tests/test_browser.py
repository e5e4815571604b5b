"""Real-browser test: JupyterLab on 127.0.0.1 with a token, driven by Debian's headless Chromium.

The test copies the quickstart notebook into a temporary root (JupyterLab autosaves: nothing is
written next to the committed notebook), starts the server on a free port with a random token,
runs the notebook in the page, changes the class and the threshold of the browser widget, and
reads the plotly figure's data from the DOM. The server it started is stopped at the end, also
on failure. A screenshot goes to artifacts/ (gitignored).

It skips only where Chromium is missing (`make browser-deps` installs Debian's package).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_quickstart.ipynb"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed at /usr/bin/chromium and could not be "
        "(run `make browser-deps` as root with access to the Debian mirror)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LabServer:
    """A JupyterLab server on 127.0.0.1 with a random token, owned by this process.

    Example:
        >>> with LabServer(root) as lab:  # doctest: +SKIP
        ...     page.goto(lab.url("lab/tree/nb.ipynb"))
    """

    def __init__(self, root: Path, start_timeout: float = 90.0) -> None:
        self.root = root
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root.parent / "jupyterlab.log"

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def __enter__(self) -> LabServer:
        env = dict(os.environ)
        state = self.root.parent / "jupyter-state"
        # keep the server's config, runtime files and workspaces out of the user's home
        env.update(
            JUPYTER_CONFIG_DIR=str(state / "config"),
            JUPYTER_RUNTIME_DIR=str(state / "runtime"),
            JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
            JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
            JUPYTER_DATA_DIR=str(state / "data"),
            PYTHONUNBUFFERED="1",
        )
        cmd = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser", "--ip", "127.0.0.1", "--port", str(self.port),
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.port_retries=0",
            "--LabApp.expose_app_in_browser=True",
            "--LanguageServerManager.autodetect=False",
        ]
        settings = state / "settings" / "@jupyterlab"
        for ext, name, values in (
            ("apputils-extension", "notification",
             {"fetchNews": "false", "checkForUpdates": False}),
            ("notebook-extension", "tracker", {"autoStartDefaultKernel": True}),
        ):
            (settings / ext).mkdir(parents=True, exist_ok=True)
            (settings / ext / f"{name}.jupyterlab-settings").write_text(json.dumps(values))
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        self._logf = open(self.log, "wb")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(
            cmd, cwd=self.root, env=env, stdout=self._logf, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited early:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=2) as r:
                    json.loads(r.read())
                    return
            except OSError:
                time.sleep(0.25)  # polling a server that is starting, not a timed assertion
        raise RuntimeError(f"jupyter lab did not answer in {self.start_timeout}s:\n"
                           f"{self.log.read_text()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # the server and its kernels run in their own session: end exactly that group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        if getattr(self, "_logf", None) is not None:
            self._logf.close()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabServer]:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    with LabServer(root) as server:
        yield server


@pytest.fixture
def page() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            pg = context.new_page()
            yield pg
            ARTIFACTS.mkdir(exist_ok=True)  # the last state of the page, also after a failure
            pg.screenshot(path=str(ARTIFACTS / "browser-last.png"))
        finally:
            browser.close()


_PROMPTS_JS = (
    "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
    ".map(e => e.textContent.trim())"
)
_KERNEL_READY_JS = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""


def open_notebook(page, lab: LabServer, name: str, timeout_ms: int = 90_000) -> float:
    """Open a notebook in JupyterLab and wait until its kernel is connected and idle (seconds)."""
    t0 = time.perf_counter()
    page.goto(lab.url(f"lab/tree/{name}"))
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]',
                           timeout=timeout_ms)
    page.wait_for_function(_KERNEL_READY_JS, timeout=timeout_ms)
    return time.perf_counter() - t0


def run_all(page, attempts: int = 3) -> None:
    """Run All Cells; retry when the command is swallowed right after the kernel turns idle."""
    for _ in range(attempts):
        page.evaluate(
            "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }"
        )
        try:
            page.wait_for_function(
                f"() => ({_PROMPTS_JS})().some(p => p !== '[ ]:')", timeout=15_000
            )
            return
        except Exception:  # playwright's TimeoutError: the race, try again
            continue
    raise AssertionError(f"Run All Cells did nothing after {attempts} attempts")


_FIG = "document.querySelector('.camviz-browser .js-plotly-plot')"
_VIEW_JS = f"""() => {{
  const gd = {_FIG};
  if (!gd || !gd.data || gd.data.length < 4 || !gd.layout.meta) return null;
  const z = gd.data[1].z, flat = [];
  for (const row of z) for (const v of row) flat.push(Number(v));
  const num = a => Array.from(a || []).filter(v => v !== null && !Number.isNaN(Number(v)))
    .map(Number);
  return {{
    meta: gd.layout.meta.camviz,
    title: gd.layout.title.text,
    zsum: flat.reduce((a, b) => a + b, 0), zlen: flat.length,
    mask_x: num(gd.data[2].x), box_x: num(gd.data[3].x), box_y: num(gd.data[3].y),
    opacity: gd.data[1].opacity,
  }};
}}"""
_ERRORS_JS = """() => {
  const shown = [...document.querySelectorAll('.camviz-error')]
    .filter(e => e.offsetParent !== null && e.innerText.trim());
  const stderr = [...document.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(e => e.innerText).filter(t => /Error|Traceback/.test(t));
  const widget = document.body.innerText.includes('Error displaying widget') ?
    ['Error displaying widget'] : [];
  return [...shown.map(e => e.innerText), ...stderr, ...widget];
}"""


def _wait_change(page, js_condition: str, timeout_ms: int = 30_000) -> float:
    """Wait until the figure in the page satisfies a condition; return the seconds it took."""
    t0 = time.perf_counter()
    page.wait_for_function(f"() => {{ const v = ({_VIEW_JS})(); return v && ({js_condition}); }}",
                           timeout=timeout_ms)
    return time.perf_counter() - t0


def test_quickstart_browser_in_jupyterlab(lab: LabServer, page) -> None:
    timings: dict[str, float] = {}
    timings["open_to_kernel_idle_s"] = open_notebook(page, lab, NOTEBOOK.name)
    t0 = time.perf_counter()
    run_all(page)
    page.wait_for_function(  # every cell ran: no [ ] or [*] prompt left
        f"() => ({_PROMPTS_JS})().every(p => /^\\[\\d+\\]:$/.test(p))", timeout=150_000)
    page.wait_for_function(f"() => ({_VIEW_JS})() !== null", timeout=60_000)
    timings["run_all_to_widgets_s"] = time.perf_counter() - t0
    page.locator(".camviz-browser").scroll_into_view_if_needed()
    before = page.evaluate(_VIEW_JS)
    assert before["meta"]["class"] is not None and before["zlen"] > 0
    assert len(before["mask_x"]) > 0 and len(before["box_x"]) == 5
    assert page.evaluate(_ERRORS_JS) == []

    # the class: pick the third entry of the top-5 dropdown
    select = page.locator(".camviz-class select")
    label = select.locator("option").nth(2).inner_text()
    select.select_option(index=2)
    timings["class_change_s"] = _wait_change(
        page, f"v.meta.class !== {before['meta']['class']}")
    after_class = page.evaluate(_VIEW_JS)
    name = label.replace("\xa0", " ").split("  ")[0]
    assert after_class["meta"]["class_name"] == name
    assert abs(after_class["zsum"] - before["zsum"]) > 1e-3  # another map is drawn
    assert after_class["meta"]["threshold"] == before["meta"]["threshold"]

    # the threshold: type into the slider's readout
    readout = page.locator(".camviz-threshold .widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("0.55")
    page.keyboard.press("Enter")
    timings["threshold_change_s"] = _wait_change(page, "v.meta.threshold === 0.55")
    after_t = page.evaluate(_VIEW_JS)
    assert after_t["meta"]["class"] == after_class["meta"]["class"]
    assert after_t["zsum"] == pytest.approx(after_class["zsum"])  # same map, new mask
    assert after_t["mask_x"] != after_class["mask_x"]
    assert "threshold 0.55" in after_t["title"]
    # a higher threshold never widens the box of the largest region... it selects a subset of
    # pixels; its box lies inside the image
    assert min(after_t["box_x"]) >= -0.5

    # a unit: its card's button shows the unit's details and its top dataset images
    button = page.locator(".camviz-unit-btn").first
    unit = button.inner_text().strip().removeprefix("unit ").strip()
    t0 = time.perf_counter()
    button.click()
    page.wait_for_function(
        "(u) => { const d = document.querySelector('.camviz-unit-detail');"
        " return d && d.innerText.includes('unit ' + u); }", arg=unit, timeout=60_000)
    page.locator(".camviz-unit-gallery").wait_for(state="visible", timeout=60_000)
    timings["unit_gallery_first_s"] = time.perf_counter() - t0
    assert page.evaluate(_VIEW_JS)["zsum"] == pytest.approx(after_t["zsum"])

    errors = page.evaluate(_ERRORS_JS)
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(".camviz-browser").screenshot(path=str(ARTIFACTS / "quickstart-browser.png"))
    page.screenshot(path=str(ARTIFACTS / "quickstart-page.png"))
    (ARTIFACTS / "browser-timings.json").write_text(json.dumps(timings, indent=2))
    print(json.dumps(timings))
    assert errors == [], errors
