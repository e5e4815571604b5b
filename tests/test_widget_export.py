"""Saving the browser's view (issues 17: 1, 10; 12: 4; 16: 16): built from the view model's frame,
never from the FigureWidget; the paper figure through camviz.figures; saving off the kernel's
thread with a link to the file; errors shown in the widget, never "saving..." for ever."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import camviz
from camviz import files
from camviz.export import save_image
from camviz.files import TMP_PREFIX
from camviz.widgets import Browser, box_path
from camviz.widgets.saving import ExportBar, failure, target_path

CLASSES = ["cup", "moped", "tabby", "tiger cat", "espresso", "Egyptian cat"]


def _net() -> camviz.GapNet:
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=4, padding=1), nn.ReLU(),
    )
    return camviz.GapNet(features, nn.Linear(16, len(CLASSES)), classes=CLASSES, device="cpu",
                         transform=camviz.Preprocess(resize=36, crop=None))


@pytest.fixture(scope="module")
def net() -> camviz.GapNet:
    return _net()


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    # two photos that are not square (whole-photo view: 36 x 54 and 36 x 45 inputs)
    return [(rng.random(shape) * 255).astype(np.uint8) for shape in ((60, 90, 3), (80, 100, 3))]


def svg_box(svg: str, width: int) -> tuple[float, float]:
    """The x range (x0, x1) in image pixels of the box a saved paper figure draws, read from the
    SVG: the main axes' background spans the image exactly (its extent is -0.5..W-0.5), and the
    box outlines its pixels from x0 - 0.5 to x1 + 0.5."""

    def xs(gid: str) -> list[float]:
        m = re.search(rf'<g id="{gid}">\s*<path d="([^"]*)"', svg)
        assert m is not None, f"no {gid} in the SVG"
        return [float(v) for v in re.findall(r"[ML] ([-\d.]+) [-\d.]+", m.group(1))]

    ax, box = xs("camviz-axes"), xs("camviz-box")
    a0, a1 = min(ax), max(ax)
    to_px = lambda v: (v - a0) / (a1 - a0) * width - 0.5  # noqa: E731
    return to_px(min(box)) + 0.5, to_px(max(box)) - 0.5


def test_exports_come_from_the_frame_not_the_widget(net, images, tmp_path):
    b = Browser(net, images, units=2)
    b.select_class("cup")
    b.image_picker.value = 1
    b.select_class("moped")  # the sequence: another photo, another class
    frame = b.view.frame
    assert frame.box is not None
    # the widget's synced data may lack a trace's x (seen in the page); exports never read it
    with b.figure.batch_update():
        b.figure.data[3].x = [0.0]
        b.figure.data[2].x = []
    fig = b.to_figure()
    assert list(fig.data[3].x) == box_path(frame.box)[0]
    np.testing.assert_array_equal(np.asarray(fig.data[2].x, float), frame.outline[0])
    svg = b.save(tmp_path / "view.svg").read_text()
    x0, x1 = svg_box(svg, frame.image.shape[1])
    assert (x0, x1) == pytest.approx((frame.box[0], frame.box[2]), abs=0.01)
    assert "moped" in svg  # the title, as text
    composite = np.asarray(b.composite(units=False))
    assert composite.shape[1] >= frame.image.shape[1]


def test_the_paper_figure_is_the_view(net, images, tmp_path):
    b = Browser(net, images, units=3, cmap="viridis", opacity=0.3, threshold=0.45)
    b.unit_order.value = "weight"
    fig = b.paper_figure()
    main = next(a for a in fig.axes if a.get_label() == "map")
    np.testing.assert_array_equal(main.images[-1].get_array(), b.view.frame.cam01)
    assert main.images[-1].get_alpha() == 0.3 and main.images[-1].get_cmap().name == "viridis"
    assert sum(a.get_label() == "unit" for a in fig.axes) == 3
    titles = " ".join(a.get_title() for a in fig.axes)
    for unit in b.state["units"]:
        assert f"unit {unit}" in titles
    assert "threshold 0.45" in main.get_title() and CLASSES[b.class_index] in main.get_title()
    other = next(u for u in range(16) if u not in b.state["units"])
    b.select_unit(other)  # a unit chosen by id, not among the tiles: added to them
    titles = [a.get_title() for a in b.paper_figure().axes if a.get_label() == "unit"]
    assert len(titles) == 4 and titles[-1].startswith(f"unit {other}\n")
    pdf = b.save(tmp_path / "view", format="pdf")
    assert pdf.suffix == ".pdf" and pdf.read_bytes()[:5] == b"%PDF-"
    png = b.save(tmp_path / "view.png", dpi=100)
    assert Image.open(png).size[0] == round(fig.get_size_inches()[0] * 100)


def test_save_runs_off_the_kernel_thread_and_links_the_file(net, images, tmp_path):
    b = Browser(net, images, units=2)
    b.export_name.value = str(tmp_path / "figs" / "view")
    b.export_format.value = "svg"
    seen: dict[str, object] = {}

    async def click_and_wait() -> None:
        b.export_button.click()  # in a kernel: a loop runs, the save goes to the worker
        seen["while"] = b.export_status.value
        seen["disabled"] = b.export_button.disabled
        assert b.export.pending is not None
        await asyncio.wrap_future(b.export.pending)

    asyncio.run(click_and_wait())
    out = tmp_path / "figs" / "view.svg"
    assert seen == {"while": "saving view.svg...", "disabled": True}
    status = b.export_status.value
    assert not b.export_button.disabled and status.startswith("saved <a href=")
    data = re.search(r'href="data:image/svg\+xml;base64,([^"]+)" download="view.svg"', status)
    assert data is not None and base64.b64decode(data.group(1)) == out.read_bytes()
    assert str(out.resolve()) in status


@pytest.mark.parametrize("where", ["under a file", "read-only"])
def test_save_errors_show_in_the_widget(net, images, tmp_path, monkeypatch, where):
    b = Browser(net, images, units=2)
    if where == "under a file":  # root writes into read-only folders: a file blocks for sure
        (tmp_path / "notes.txt").write_text("x")
        name, want = tmp_path / "notes.txt" / "view", "is a file, not a folder"
    else:
        import camviz.figures.style as style

        def refuse(*_a: object, **_k: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(style.os, "replace", refuse)
        name, want = tmp_path / "ro" / "view", "Permission denied; choose a folder you can write"
    b.export_name.value = str(name)
    b.export_format.value = "pdf"

    async def click_and_wait() -> None:
        b.export_button.click()
        if b.export.pending is not None:
            await asyncio.wrap_future(b.export.pending)

    asyncio.run(click_and_wait())
    status = b.export_status.value
    assert want in status and "saving..." not in status and "b00020" in status
    assert not b.export_button.disabled
    assert not list(tmp_path.rglob("*.pdf")) and not list(tmp_path.rglob(f"{TMP_PREFIX}*"))
    with pytest.raises(camviz.CamvizError if where == "under a file" else PermissionError):
        b.save(Path(name).with_suffix(".pdf"))


def test_export_bar_without_a_loop_and_its_messages(tmp_path):
    def prepare(path: Path, fmt: str):
        def job() -> Path:
            raise RuntimeError("boom")
        return job

    bar = ExportBar(prepare)
    bar.name.value = str(tmp_path / "x")
    bar.button.click()  # no loop running: at once, in this thread
    assert "saving..." not in bar.status.value and "RuntimeError: boom" in bar.status.value
    assert target_path("  ", "composite") == Path("camviz-view.png")
    assert target_path("a/b.svg", "pdf") == Path("a/b.svg")
    assert failure(IsADirectoryError(21, "Is a directory"), Path("d")) == (
        "cannot write d: Is a directory; choose a folder you can write to")


def test_nothing_to_export_from_an_error(net, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    b = Browser(net, [bad])
    b.export_name.value = str(tmp_path / "v")
    assert b.export_button.disabled  # an error frame disables saving; a click says why
    b.export_button.click()
    assert "nothing to export" in b.export_status.value and "..." not in b.export_status.value
    with pytest.raises(camviz.CamvizError, match="nothing to export"):
        b.save(tmp_path / "v.pdf")


def test_composite_image_gets_umask_permissions_and_stale_temps_go(tmp_path):
    stale = tmp_path / f"{files.TMP_PREFIX}999999999-abcd1234-v.jpg"
    stale.write_bytes(b"half")  # a killed run's temp file beside the target
    old = os.umask(0o022)
    try:
        p = save_image(Image.new("RGB", (4, 4), (200, 10, 10)), tmp_path / "v.jpg")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644 and Image.open(p).format == "JPEG"
    assert not stale.exists()
    with pytest.raises(camviz.CamvizError, match=r"cannot save an image as '.xyz'.*use .png"):
        save_image(Image.new("RGB", (4, 4)), tmp_path / "v.xyz")
    assert [f.name for f in tmp_path.iterdir()] == ["v.jpg"]
