"""Every notebook in notebooks/ runs top to bottom, headless (nbclient), without an error.

Each is executed in its own folder (as a reader would run it) from a fresh kernel, with a
120 s limit per cell; the notebooks must leave that folder as it was. Committed notebooks carry
no outputs and no widget state (a saved plotly widget embeds ~5 MB of JavaScript).
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
# a guard against a hung kernel, not a speed test: cells that scan or fit take minutes on a
# 2-core machine shared with other jobs
CELL_TIMEOUT = 600


def _ids(p: Path) -> str:
    return p.stem


def _slowest_cells(nb: nbformat.NotebookNode, n: int = 3) -> str:
    """The n slowest cells with their seconds, from nbclient's recorded timings."""
    from datetime import datetime

    spans = []
    for i, cell in enumerate(nb.cells):
        ex = cell.get("metadata", {}).get("execution", {})
        start, end = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
        if start and end:
            secs = (datetime.fromisoformat(end.replace("Z", "+00:00"))
                    - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
            spans.append((secs, i))
    return ", ".join(f"cell {i} {secs:.1f} s" for secs, i in sorted(spans, reverse=True)[:n])


def test_there_are_notebooks():
    assert any(p.name == "01_quickstart.ipynb" for p in NOTEBOOKS), NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_is_committed_clean(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} have stored outputs; clear them"
    assert "widgets" not in nb.metadata, f"{path.name} stores widget state; clear it"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_without_error(path: Path):
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    elapsed = time.perf_counter() - t0
    print(f"{path.name}: {elapsed:.1f} s; slowest cells: {_slowest_cells(nb)}")
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{path.name} cell {i}: {out}"
            text = "".join(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
            assert "Error displaying widget" not in text, f"{path.name} cell {i}"
            assert "Traceback" not in text, f"{path.name} cell {i}: {text[:500]}"
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before, (
        f"{path.name} wrote files next to the notebooks")
