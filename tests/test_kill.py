"""camviz run killed at random points (SIGINT, SIGTERM, SIGKILL) and rerun gives what an
uninterrupted run gives: the same records, the same files, no temporary files (issue 16)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camviz.demo import write_demo_images

pytestmark = pytest.mark.slow


def _cmd(inputs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "camviz", "run", str(inputs), "--model", "demo", "--device",
            "cpu", "--batch-size", "1", "--topk", "3", "--no-progress", "--out", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _records(out: Path) -> list[dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["image"])


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "results.jsonl"}


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    inputs = root / "in"
    write_demo_images(inputs, n=24)
    out = root / "clean"
    subprocess.run(_cmd(inputs, out), check=True, env=_env(), capture_output=True)
    return inputs, _records(out), _files(out)


@pytest.mark.parametrize(("sig", "after"), [(signal.SIGINT, 2), (signal.SIGTERM, 5),
                                            (signal.SIGKILL, 3), (signal.SIGKILL, 9)])
def test_killed_run_resumes_to_the_uninterrupted_result(reference, tmp_path, sig, after):
    inputs, records, files = reference
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(inputs, out), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _lines(out / "results.jsonl") < after and proc.poll() is None:
        assert time.monotonic() < deadline, "camviz run made no progress"
        time.sleep(0.005)
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    assert code != 0 or _lines(out / "results.jsonl") == len(records)  # it stopped early
    if sig in (signal.SIGINT, signal.SIGTERM) and code != 0:
        assert "rerun the same command to resume" in proc.stderr.read().decode()
        assert not list(out.rglob(".camviz-tmp-*"))  # unwound: its partial files are gone
    subprocess.run(_cmd(inputs, out), check=True, env=_env(), capture_output=True)
    assert _records(out) == records
    assert _files(out) == files
    assert not list(out.rglob(".camviz-tmp-*"))
