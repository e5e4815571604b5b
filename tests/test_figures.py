"""Paper figures: panels hold exactly the maps camviz computed, text stays text, sizes, errors."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pypdf
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset

import camviz
from camviz import figures, files
from camviz.cli import main
from camviz.datasets import PartsFolder, WsolDataset
from camviz.datasets import resolve_metadata as resolve_eval_data
from camviz.dissect import dissect
from camviz.errors import CamvizError
from camviz.evaluate import eval_transform, evaluate, gt_maps
from camviz.localize import boxes, paper_box
from camviz.metrics import box_iou
from camviz.result import min_max
from camviz.units import class_units as units_by_weight
from camviz.units import unit_masks

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "demo-fixture"
IMAGES = [str(FIXTURE / "images" / f"{i:06d}.png") for i in range(3)]
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def net() -> camviz.GapNet:
    return camviz.load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def gmp() -> camviz.GapNet:
    return camviz.load_model("demo-gmp", device="cpu")


@pytest.fixture(scope="module")
def res(net):
    return net.run(IMAGES)


@pytest.fixture(scope="module")
def parts(net):
    data = Subset(PartsFolder(FIXTURE, transform=net.transform), range(16))
    stats = camviz.scan(net, data, cache=False, progress=False)
    return data, stats, dissect(net, data, stats, progress=False)


@pytest.fixture(scope="module")
def meta():
    return resolve_eval_data(str(FIXTURE))


@pytest.fixture(scope="module")
def results(net, gmp, meta):
    return {name: evaluate(model, meta, limit=16, progress=False)
            for name, model in (("GAP", net), ("GMP", gmp))}


def panels(fig, label="map"):
    return [ax for ax in fig.axes if ax.get_label() == label]


def shown(ax) -> np.ndarray:
    return np.asarray(ax.images[-1].get_array())


def pdf_text(path: Path) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(path).pages)


def svg_texts(path: Path) -> list[str]:
    return [t.text or "" for t in ET.parse(path).getroot().iter(f"{SVG}text")]


# ------------------------------------------------------------------ the panels hold camviz's maps


def test_top_classes_has_k_maps_in_top_k_order_equal_to_cams(res):
    fig = figures.top_classes(res, i=1, k=5)
    one = res.select(1)
    top = one.topk(5)
    cams = one.cams(top.indices, size="input", normalize=True)[0].numpy()
    maps = panels(fig)
    assert len(maps) == 5
    for j, ax in enumerate(maps):
        assert np.array_equal(shown(ax), cams[j])
        name, prob = ax.get_title().split("\n")
        assert name == top.names[0][j]
        assert prob == f"p = {float(top.probs[0, j]):.2f}"
    assert np.array_equal(shown(panels(fig, "input")[0]), res.images()[1])
    assert len(panels(figures.top_classes(res, k=3))) == 3


def test_compare_rows_are_each_networks_maps(net, gmp):
    fig = figures.compare({"GAP": net, "GMP": gmp}, IMAGES, cls="cart")
    maps = panels(fig)
    assert len(maps) == 2 * len(IMAGES)
    for r, model in enumerate((net, gmp)):
        cams = model.run(IMAGES).cams(5, size="input", normalize=True)[:, 0].numpy()
        for j in range(len(IMAGES)):
            assert np.array_equal(shown(maps[r * len(IMAGES) + j]), cams[j])
            assert maps[r * len(IMAGES) + j].get_title().startswith("cart ")
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == [
        "input", "GAP", "GMP", "normalised CAM"]
    top1 = figures.compare([net], IMAGES)  # each image's own top-1 class
    r = net.run(IMAGES)
    want = r.cams(None, size="input", normalize=True)[:, 0].numpy()
    for j, ax in enumerate(panels(top1)):
        assert np.array_equal(shown(ax), want[j])
        assert ax.get_title().split()[0] == r.topk(1).names[j][0]


def test_compare_shows_each_whole_photo_unless_asked_for_the_crop(net, gmp):
    """Photos of two shapes in one figure: each runs alone in the whole view (no centre crop),
    its map the one ``net.run([photo], view="whole")`` gives; ``view="crop"`` is the batch."""
    rng = np.random.default_rng(3)
    photos = [(rng.random((100, 150, 3)) * 255).astype(np.uint8),
              (rng.random((150, 100, 3)) * 255).astype(np.uint8)]
    fig = figures.compare({"GAP": net, "GMP": gmp}, photos, cls="cart")
    maps = panels(fig)
    for r, model in enumerate((net, gmp)):
        for j, photo in enumerate(photos):
            want = model.run([photo], view="whole").cams(5, size="input", normalize=True)
            assert np.array_equal(shown(maps[2 * r + j]), want[0, 0].numpy())
    assert [shown(m).shape for m in maps[:2]] == [(128, 192), (192, 128)]  # shorter side 128
    crop = panels(figures.compare([net], photos, cls="cart", view="crop"))
    want = net.run(photos).cams(5, size="input", normalize=True)[:, 0].numpy()
    assert all(np.array_equal(shown(ax), want[j]) for j, ax in enumerate(crop))
    assert {shown(ax).shape for ax in crop} == {(128, 128)}


def test_class_units_rows_are_top_units_over_their_top_images_with_their_masks(net, parts):
    data, stats, d = parts
    fig = figures.class_units(net, stats, data, "cart", units=3, images=2, dissection=d)
    ids, w = units_by_weight(net, "cart", 3)
    tiles = panels(fig, "unit")
    assert len(tiles) == 6
    for r, unit in enumerate(ids.tolist()):
        idx, _ = stats.top_images(unit, 2)
        x = torch.stack([data[int(i)]["image"] for i in idx])
        want = unit_masks(net.run(x), stats, [unit])[:, 0].numpy()
        for j in range(2):
            assert np.array_equal(shown(tiles[2 * r + j]), want[j].astype(np.float32))
        label = tiles[2 * r].get_ylabel().split("\n")
        assert label[0] == f"unit {unit}" and label[1] == f"w = {float(w[r]):.3g}"
        assert label[2] == f"{d.labels[unit]} (IoU {float(d.best_iou[unit]):.2f})"
    contrib = stats.class_contributions("label")[5]
    by_c = figures.class_units(net, stats, data, 5, units=2, images=1, order="contribution")
    got = [int(ax.get_ylabel().split("\n")[0].split()[1]) for ax in panels(by_c, "unit")]
    assert got == contrib.topk(2).indices.tolist()


def test_class_units_map_tiles_are_unit_activation_over_its_dataset_max(net, parts):
    data, stats, _ = parts
    fig = figures.class_units(net, stats, data, "key", units=1, images=2, show="map")
    unit = int(units_by_weight(net, "key", 1)[0][0])
    idx, val = stats.top_images(unit, 2)
    x = torch.stack([data[int(i)]["image"] for i in idx])
    raw = net.run(x).unit_maps([unit], size="input")[:, 0]
    want = (raw / float(val[0])).clamp(0, 1).numpy()
    for j, ax in enumerate(panels(fig, "unit")):
        assert np.array_equal(shown(ax), want[j])
    assert fig.axes[-1].get_ylabel() == "unit activation / its dataset max"


def test_localization_shows_gt_maps_gt_boxes_and_paper_box(net, meta):
    fig = figures.localization(net, meta, n=3, cols=3)
    h, w = eval_transform(net).resize
    ds = WsolDataset(meta, transform=eval_transform(net), map_size=(w, h))
    items = [ds[i] for i in range(3)]
    x = torch.stack([it["image"] for it in items])
    labels = torch.tensor([it["label"] for it in items])
    want = gt_maps(net.run(x), labels, (h, w)).numpy()
    maps = panels(fig)
    assert len(maps) == 3
    for j, ax in enumerate(maps):
        assert np.array_equal(shown(ax), want[j])
        pred = paper_box(want[j])
        drawn = [(p.get_x() + 0.5, p.get_y() + 0.5, p.get_x() + p.get_width() - 0.5,
                  p.get_y() + p.get_height() - 0.5, p.get_linestyle()) for p in ax.patches]
        assert drawn == [(*b, "--") for b in items[j]["boxes"].tolist()] + [(*pred, "-")]
        iou = float(box_iou(pred[None], items[j]["boxes"]).max())
        assert ax.get_title() == f"{net.classes[items[j]['label']]}\nIoU {iou:.2f}"


def test_curves_plot_what_evaluate_returns(results):
    fig = figures.curves(results)
    acc, pr = fig.axes[:2]
    assert (acc.get_label(), pr.get_label()) == ("box accuracy", "precision-recall")
    for n, r in enumerate(results.values()):
        for k, iou in enumerate((30, 50, 70)):
            line = acc.lines[3 * n + k]
            assert np.array_equal(line.get_xdata(), r["curves"]["cam_thresholds"])
            assert np.array_equal(line.get_ydata(), r["curves"][f"V2@{iou}"])
        pc = r["pxap_curve"]
        p = np.array([np.nan if v is None else v for v in pc["precision"]])
        assert np.array_equal(pr.lines[n].get_xdata(), pc["recall"])
        assert np.array_equal(pr.lines[n].get_ydata(), p, equal_nan=True)
    labels = [t.get_text() for t in pr.get_legend().get_texts()]
    assert labels == [f"{k} (PxAP {r['PxAP']:.1f})" for k, r in results.items()]


def test_evaluate_pxap_curve_integrates_to_pxap(results):
    out = results["GAP"]
    p = np.array([np.nan if v is None else v for v in out["pxap_curve"]["precision"]])
    rc = np.array(out["pxap_curve"]["recall"])
    assert np.all(np.diff(rc) >= 0) and rc[-1] == 1.0
    ok = ~np.isnan(p[1:])
    assert (p[1:] * np.diff(rc))[ok].sum() * 100 == pytest.approx(out["PxAP"], rel=1e-12)


def test_view_is_the_browser_state_as_a_figure(res, parts):
    _, stats, _ = parts
    one = res.select(2)
    fig = figures.view(res, "cart", 0.3, index=2, units=[3, 17], stats=stats)
    cam = one.cams(5, size="input", normalize=True)[0, 0].numpy()
    main_ax = panels(fig)[0]
    assert np.array_equal(shown(main_ax), cam)
    x0, y0, x1, y1 = boxes(cam, 0.3)[0].tolist()
    box = main_ax.patches[0]
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (
        x0 - 0.5, y0 - 0.5, x1 - x0 + 1, y1 - y0 + 1)
    tiles = panels(fig, "unit")
    want = min_max(one.unit_maps([3, 17], size="input"))[0].numpy()
    for j, ax in enumerate(tiles):
        assert np.array_equal(shown(ax), want[j])
        assert ax.get_title().startswith(f"unit {[3, 17][j]}\nw ")
    by_k = figures.view(res, "cart", index=2, units=2, order="contribution")
    ids = one.units(5, k=2, order="contribution").ids[0].tolist()
    assert [ax.get_title().split("\n")[0] for ax in panels(by_k, "unit")] == [
        f"unit {u}" for u in ids]
    bare = figures.view(res, None, box=False, mask=False)
    assert not panels(bare)[0].patches and not panels(bare)[0].collections
    assert panels(bare)[0].get_title().startswith(res.topk(1).names[0][0])


# ------------------------------------------------------------------ files: text stays text, sizes


def test_pdf_text_has_class_names_and_unit_ids_in_truetype(res, net, parts, tmp_path):
    data, stats, d = parts
    top = figures.save(figures.top_classes(res, k=5), tmp_path / "top.pdf", dpi=72)
    text = pdf_text(top)
    for name in res.topk(5).names[0]:
        assert name in text
    assert "normalised CAM" in text
    raw = top.read_bytes()
    assert b"/FontFile2" in raw and b"/Type3" not in raw  # TrueType, not Type 3 glyphs
    units = figures.save(figures.class_units(net, stats, data, "sword", units=3, images=1,
                                             dissection=d), tmp_path / "units.pdf", dpi=72)
    text = pdf_text(units)
    assert "sword" in text
    for unit in units_by_weight(net, "sword", 3)[0].tolist():
        assert f"unit {unit}" in text


def test_svg_keeps_text_as_text_elements(res, tmp_path):
    path = figures.save(figures.top_classes(res, k=5, width="column"), tmp_path / "top.svg",
                        dpi=72)
    texts = svg_texts(path)
    assert set(res.topk(5).names[0]) <= set(texts)
    assert "normalised CAM" in texts and "input" in texts


def test_png_pixels_are_width_times_dpi(res, tmp_path):
    fig = figures.top_classes(res, k=2, width=2.5)
    path = figures.save(fig, tmp_path / "top.png", dpi=120)
    h = fig.get_size_inches()[1]
    assert Image.open(path).size == (300, int(h * 120))
    col = figures.save(figures.top_classes(res, k=2, width="column"), tmp_path / "c.png", dpi=50)
    assert Image.open(col).size[0] == 165
    assert figures.figure_width("page") == 6.9


def test_figures_show_themselves_in_jupyter_as_png(res):
    png = figures.top_classes(res, k=2, width=2.0)._repr_png_()  # what IPython displays
    assert Image.open(io.BytesIO(png)).size[0] == 300  # 2 in at 150 dpi


def test_same_figure_made_twice_same_bytes(res, tmp_path):
    for suffix in (".pdf", ".svg"):
        a, b = (figures.save(figures.top_classes(res, k=2, width="column"),
                             tmp_path / f"{n}{suffix}", dpi=72).read_bytes() for n in "ab")
        assert a == b


def test_saved_figures_get_umask_permissions_and_stale_temps_go(tmp_path):
    from camviz.figures.style import new_figure

    dead = f"{files.TMP_PREFIX}999999999-abcd1234-"
    for suffix in (".png", ".pdf", ".svg"):
        stale = tmp_path / f"{dead}f{suffix}"
        stale.write_bytes(b"half")  # a killed run's temp file beside the target
        old = os.umask(0o022)
        try:
            path = figures.save(new_figure(1.0, 1.0), tmp_path / f"f{suffix}", dpi=50)
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.stat().st_size > 100
        assert not stale.exists()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["f.pdf", "f.png", "f.svg"]


def test_style_is_local_and_cmap_selectable(res):
    before = {k: mpl.rcParams[k] for k in ("pdf.fonttype", "svg.fonttype", "font.size")}
    fig = figures.top_classes(res, k=1, cmap="jet")
    assert panels(fig)[0].images[-1].get_cmap().name == "jet"
    assert panels(figures.top_classes(res, k=1))[0].images[-1].get_cmap().name == "viridis"
    assert fig.axes[-1].get_ylabel() == "normalised CAM"
    assert {k: mpl.rcParams[k] for k in before} == before
    # drawn outside the style (as a notebook's own PNG of it would be), text keeps its sizes
    r = {"curves": {"cam_thresholds": [0.0, 1.0], "V2@30": [9, 0], "V2@50": [5, 0],
                    "V2@70": [1, 0]}}
    for f in (fig, figures.curves({"A": r})):
        f.savefig(io.BytesIO(), format="png", dpi=20)
        sizes = {t.get_fontsize() for ax in f.axes for t in [
            *ax.xaxis.get_ticklabels(), *ax.yaxis.get_ticklabels(), ax.title, ax.yaxis.label]}
        assert sizes <= {6.0, 7.0}, sizes


def test_import_camviz_does_not_import_matplotlib():
    code = "import sys, camviz; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ errors say what to do


def test_unknown_names_and_bad_arguments_raise_camviz_errors(res, net, parts, tmp_path):
    data, stats, _ = parts
    unknown = "unknown class 'zebra'; the network's 9 classes are house, tree, sign"
    with pytest.raises(CamvizError, match=unknown):
        figures.class_units(net, stats, data, "zebra")
    with pytest.raises(CamvizError, match=unknown):
        figures.compare([net], IMAGES, cls="zebra")
    with pytest.raises(CamvizError, match=unknown):
        figures.view(res, "zebra")
    with pytest.raises(CamvizError, match=r"cannot save a figure as '\.jpg' .*name it \.pdf"):
        figures.save(figures.top_classes(res, k=1), tmp_path / "f.jpg")
    with pytest.raises(CamvizError, match="a file without a suffix"):
        figures.save(figures.top_classes(res, k=1), tmp_path / "f")
    assert not list(tmp_path.iterdir())
    with pytest.raises(CamvizError, match="width must be inches > 0, 'column'"):
        figures.top_classes(res, width="wide")
    with pytest.raises(CamvizError, match="unknown colour map 'nope'"):
        figures.top_classes(res, cmap="nope")
    with pytest.raises(CamvizError, match="image index 3 out of range"):
        figures.top_classes(res, i=3)
    with pytest.raises(CamvizError, match="unit ids must lie in 0..127"):
        figures.view(res, units=[128])


def test_empty_datasets_and_results_raise_camviz_errors(net, parts, tmp_path):
    data, stats, _ = parts
    with pytest.raises(CamvizError, match="the dataset is empty: give the dataset that was"):
        figures.class_units(net, stats, [], "cart")
    with pytest.raises(CamvizError, match="scanned over 16 images but the dataset has 2"):
        figures.class_units(net, stats, [data[0], data[1]], "cart")
    for name in ("image_ids.txt", "class_labels.txt", "localization.txt"):
        (tmp_path / name).write_text("")
    with pytest.raises(CamvizError, match="holds no images: there is nothing to show"):
        figures.localization(net, resolve_eval_data(str(tmp_path)))
    with pytest.raises(CamvizError, match="needs at least one result"):
        figures.curves({})
    with pytest.raises(CamvizError, match="the result of A has no box accuracy curves"):
        figures.curves({"A": {"PxAP": 50.0}})


# ------------------------------------------------------------------ the CLI


def run_cli(*argv: str) -> int:
    return main(["figure", *argv])


def test_cli_writes_each_figure(tmp_path, capsys):
    split = camviz.ensure_split("test", 8, progress=False)
    out = {k: tmp_path / f"{k}.{s}" for k, s in
           [("top", "pdf"), ("units", "svg"), ("compare", "png"), ("loc", "pdf"), ("cu", "svg")]}
    assert run_cli("top-classes", IMAGES[0], "--model", "demo", "--out", str(out["top"]),
                   "--width", "column", "--dpi", "72") == 0
    assert run_cli("units", "--model", "demo", "--data", "demo:test:8", "--cls", "cart",
                   "--units", "2", "--images", "2", "--no-cache", "--no-progress",
                   "--out", str(out["units"]), "--dpi", "72") == 0
    assert run_cli("compare", "--model", "demo", "--model", "demo-gmp", *IMAGES[:2],
                   "--out", str(out["compare"]), "--dpi", "50", "--width", "4") == 0
    assert run_cli("localization", "--model", "demo", "--data", str(split), "--n", "2",
                   "--out", str(out["loc"]), "--cmap", "jet", "--dpi", "72") == 0
    assert run_cli("curves", "--model", "demo", "--model", "demo-gmp", "--data", str(FIXTURE),
                   "--limit", "8", "--no-progress", "--out", str(out["cu"]), "--dpi", "72") == 0
    assert out["top"].read_bytes().startswith(b"%PDF") and out["loc"].read_bytes()[:4] == b"%PDF"
    assert Image.open(out["compare"]).size[0] == 200
    assert "unit " in " ".join(svg_texts(out["units"]))
    assert {"demo", "demo-gmp"} <= {t.split(" (")[0] for t in svg_texts(out["cu"])}
    printed = capsys.readouterr().out
    assert all(f"output: {p.resolve()}" in printed for p in out.values())


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    cases = [
        (["top-classes", IMAGES[0], "--out", str(tmp_path / "f.gif")],
         "camviz: error: cannot save a figure as '.gif'"),
        (["units", "--data", str(FIXTURE), "--cls", "zebra", "--out", str(tmp_path / "u.pdf")],
         "camviz: error: unknown class 'zebra'"),
        (["compare", "--model", "demo", IMAGES[0], "--cls", "zebra", "--out",
          str(tmp_path / "c.pdf")], "camviz: error: unknown class 'zebra'"),
        (["localization", "--data", str(tmp_path), "--out", str(tmp_path / "l.pdf")],
         f"camviz: error: {tmp_path} holds no images"),
        (["units", "--data", str(tmp_path), "--cls", "cart", "--out", str(tmp_path / "u.pdf")],
         f"camviz: error: {tmp_path} holds no images"),
    ]
    for name in ("image_ids.txt", "class_labels.txt", "localization.txt", "parts.txt"):
        (tmp_path / name).write_text("")
    for argv, message in cases:
        assert run_cli(*argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".pdf", ".gif")]


# ------------------------------------------------------------------ docstring examples


def test_top_classes_shows_the_whole_photo_by_default_on_the_cli(tmp_path):
    from camviz.cli import build_parser

    args = build_parser().parse_args(["figure", "top-classes", "a.png", "--out", "f.pdf"])
    assert args.view == "whole"
    wide = np.random.default_rng(0).integers(0, 255, (90, 180, 3), dtype=np.uint8)
    net = camviz.load_model("demo", device="cpu")
    fig = figures.top_classes(net.run([wide], view="whole"), k=2)
    shown = [ax.images[-1].get_array().shape[:2] for ax in fig.axes if ax.get_label() == "map"]
    h, w = shown[0]
    assert abs(w / h - 2.0) < 0.05  # the 2:1 photo, not a square crop of it
