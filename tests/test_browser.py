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
            yield context.new_page()
        finally:
            browser.close()


_PROMPTS_JS = (
    "() => [...document.querySelectorAll('.jp-InputPrompt')].map(e => e.textContent.trim())"
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
