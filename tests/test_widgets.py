"""The browser's logic without a browser: each control changes the figure's data as expected,
the network runs once per image, names are escaped, and a bad image shows an error."""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

import camviz
from camviz.localize import boxes, mask
from camviz.widgets import Browser, box_path, colorscale, display_map, mask_outline
from camviz.widgets.panel import TIPS, area_text, share_text

NASTY = "<script>alert('x')</script>"
CLASSES = ["cat", NASTY, "a&b", "<b>bold</b>", "dog", "eel"]


def _net(classes: list[str] = CLASSES) -> camviz.GapNet:
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=4, padding=1), nn.ReLU(),
    )
    return camviz.GapNet(features, nn.Linear(16, len(classes)), classes=classes, device="cpu",
                         transform=camviz.Preprocess(resize=(40, 48)))


class Counter:
    """Counts real network passes with a forward hook on the model."""

    def __init__(self, net: camviz.GapNet) -> None:
        self.n = 0
        net.model.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.n += 1


@pytest.fixture
def net() -> camviz.GapNet:
    return _net()


@pytest.fixture
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((40, 48, 3)) * 255).astype(np.uint8) for _ in range(3)]


def _cam01(b: Browser, c: int) -> np.ndarray:
    return b.result.cams(c, size="input", normalize=True)[0, 0].numpy()


def test_one_pass_per_image_none_on_other_controls(net, images):
    calls = Counter(net)
    b = Browser(net, images, units=3)
    assert calls.n == 1 and b.forward_passes == 1
    b.class_picker.value = b.class_picker.options[1][1]
    b.select_class("eel")
    b.class_search.value = "dog"
    b.threshold.value = 0.6
    b.opacity.value = 0.1
    b.cmap.value = "viridis"
    b.show_box.value = False
    b.show_mask.value = False
    b.unit_order.value = "contribution"
    b.select_unit(b.state["units"][0])
    b.unit_cards[1][2].click()
    assert calls.n == 1
    b.image_picker.value = 1
    assert calls.n == 2
    b.image_picker.value = 0
    b.image_picker.value = 1
    assert calls.n == 2 and b.forward_passes == 2


def test_class_change_redraws_the_map_of_that_class(net, images):
    b = Browser(net, images)
    top = b.result.topk(5).indices[0].tolist()
    assert b.class_index == top[0]
    assert [v for _, v in b.class_picker.options] == top
    for c in (top[2], top[1]):
        b.class_picker.value = c
        z, step = display_map(_cam01(b, c))
        np.testing.assert_allclose(np.asarray(b.figure.data[1].z), z, rtol=0, atol=1e-6)
        assert b.figure.data[1].dx == step
        assert b.figure.layout.meta["camviz"]["class"] == c
        assert html.escape(CLASSES[c]) in b.figure.layout.title.text
    z1 = np.asarray(b.figure.data[1].z).copy()
    b.class_picker.value = top[2]
    assert not np.allclose(np.asarray(b.figure.data[1].z), z1)


def test_any_class_by_name_is_added_to_the_dropdown(net, images):
    b = Browser(net, images, k=2)
    top = [v for _, v in b.class_picker.options]
    outside = next(c for c in range(len(CLASSES)) if c not in top)
    b.class_search.value = CLASSES[outside]
    assert b.class_index == outside
    assert b.class_picker.value == outside
    label = dict((v, k) for k, v in b.class_picker.options)[outside]
    assert label.startswith(CLASSES[outside]) and "not in top 2" in label
    b.class_search.value = "no such class"  # ignored: not a class name
    assert b.class_index == outside


def test_threshold_moves_outline_and_box_to_the_localize_result(net, images):
    b = Browser(net, images)
    cam = _cam01(b, b.class_index)
    areas = []
    for t in (0.1, 0.5, 0.9):
        b.threshold.value = t
        fg, bb = mask(cam, t), boxes(cam, t)
        xs = np.asarray(b.figure.data[2].x, dtype=float)
        ys = np.asarray(b.figure.data[2].y, dtype=float)
        ex, ey = mask_outline(fg)
        np.testing.assert_array_equal(xs, ex)
        np.testing.assert_array_equal(ys, ey)
        bx, by = box_path(bb[0])
        assert list(b.figure.data[3].x) == bx and list(b.figure.data[3].y) == by
        assert b.figure.layout.meta["camviz"]["threshold"] == t
        assert f"threshold {t:.2f}" in b.figure.layout.title.text
        areas.append(int(fg.sum()))
    assert areas[0] > areas[1] > areas[2] > 0


def test_opacity_cmap_and_toggles(net, images):
    b = Browser(net, images)
    b.opacity.value = 0.25
    assert b.figure.data[1].opacity == 0.25
    b.cmap.value = "gray"
    assert [list(s) for s in b.figure.data[1].colorscale] == colorscale("gray")
    b.show_box.value = False
    assert b.figure.data[3].visible is False and b.figure.data[2].visible is not False
    b.show_mask.value = False
    assert b.figure.data[2].visible is False
    b.show_box.value = True
    b.threshold.value = 0.3  # redraw keeps the toggles
    assert b.figure.data[3].visible is True and b.figure.data[2].visible is False


def test_unit_panel_lists_top_units_by_contribution_then_weight(net, images):
    b = Browser(net, images, units=4)
    c = b.class_index
    assert b.unit_order.value == "contribution" == b.state["unit_order"]  # the default
    assert "by contribution on this image (the default" in b.unit_header.value
    for order in ("contribution", "weight"):
        b.unit_order.value = order
        u = b.result.units(c, k=4, order=order)
        assert b.state["units"] == u.ids[0].tolist()
        for j, (img, lab, btn) in enumerate(b.unit_cards):
            unit = int(u.ids[0, j])
            tile = b.view.frame.units[j]
            assert f"unit <b>{unit}</b>" in lab.value
            assert f"{share_text(float(u.share[0, j]))} of logit" in lab.value
            assert f"mask {area_text(tile.area)}" in lab.value
            for tip in TIPS.values():  # every number says what it is
                assert f'title="{html.escape(tip)}"' in lab.value
            assert btn.description == f"unit {unit}"
            assert Image.open(__import__("io").BytesIO(img.value)).size[0] > 0
    assert "by weight w_ck" in b.unit_header.value
    b.unit_cards[0][2].click()
    assert b.state["unit"] == b.state["units"][0]
    assert "camviz.scan" in b.unit_detail.value  # no stats: says how to get the gallery


def test_class_names_are_escaped_in_html(net, images):
    b = Browser(net, images)
    b.select_class(NASTY)
    b.select_unit(b.state["units"][0])
    texts = [b.unit_header.value, b.unit_detail.value, b.figure.layout.title.text]
    for text in texts:
        assert "<script>" not in text
        assert html.escape(NASTY) in text
    b.select_class("<b>bold</b>")
    assert "&lt;b&gt;bold&lt;/b&gt;" in b.unit_header.value
    assert "<b>bold</b>" not in b.figure.layout.title.text


def test_an_image_that_fails_shows_an_error_and_the_browser_goes_on(net, images, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(images[0]).save(good)
    bad = tmp_path / "<img src=x onerror=alert(1)>.png"
    bad.write_bytes(b"not a png at all")
    missing = tmp_path / "missing.png"
    b = Browser(net, [bad, good, missing])  # the first image is the bad one: no exception
    assert b.state["error"] is not None and b.result is None
    assert "<img" not in b.error.value and "&lt;img src=x" in b.error.value
    assert "corrupt" in b.error.value or "not a readable image" in b.error.value
    assert b.error.layout.display != "none"
    assert b.threshold.disabled and b.class_picker.disabled
    assert b.figure.data[1].visible is False
    b.image_picker.value = 1
    assert b.state["error"] is None and b.result is not None
    assert b.error.layout.display == "none" and not b.threshold.disabled
    assert b.figure.data[1].visible is True
    b.image_picker.value = 2
    assert "not found" in b.error.value
    with pytest.raises(camviz.CamvizError, match="nothing to export"):
        b.composite()


def test_stats_light_up_unit_masks_and_gallery(net, images):
    data = [net.transform(im) for im in images] * 2
    stats = camviz.scan(net, data, cache=False, progress=False, top_n=4)
    calls = Counter(net)
    b = Browser(net, images, stats, dataset=data, units=3, gallery=3)
    assert calls.n == 1
    assert "dataset quantile" in b.unit_header.value
    unit = b.state["units"][0]
    b.select_unit(unit)
    assert calls.n == 2  # the unit's top dataset images: one pass, the first time only
    assert b.unit_gallery.layout.display != "none" and len(b.unit_gallery.value) > 0
    assert "top 3 dataset images" in b.unit_detail.value
    b.threshold.value = 0.7
    b.select_unit(unit)
    assert calls.n == 2
    # without the dataset, the unit's top images are listed by index
    b2 = Browser(net, images, stats, units=2)
    b2.select_unit(b2.state["units"][0])
    idx, _ = stats.top_images(b2.state["units"][0], 6)
    assert f"#{int(idx[0])}" in b2.unit_detail.value and "dataset=" in b2.unit_detail.value


def test_stats_of_another_network_are_refused(net, images):
    stats = camviz.UnitStats.empty(units=3, classes=CLASSES)
    with pytest.raises(camviz.CamvizError, match="3 units"):
        Browser(net, images, stats)


def _find(big: np.ndarray, small: np.ndarray) -> tuple[int, int] | None:
    """Top-left corner of the first exact copy of ``small`` inside ``big``, or None."""
    h, w = small.shape[:2]
    ys, xs = np.nonzero((big == small[h // 2, w // 2]).all(-1))
    for y, x in zip(ys - h // 2, xs - w // 2, strict=True):
        if 0 <= y <= big.shape[0] - h and 0 <= x <= big.shape[1] - w and np.array_equal(
                big[y:y + h, x:x + w], small):
            return int(y), int(x)
    return None


def test_composite_export_without_browser(net, images, tmp_path):
    b = Browser(net, images, units=3)
    b.threshold.value = 0.4
    img = b.composite()
    main = np.asarray(b.composite(units=False))
    arr = np.asarray(img)
    assert img.mode == "RGB" and img.height > main.shape[0]
    np.testing.assert_array_equal(arr[:main.shape[0], :main.shape[1]], main)  # the view on top
    # under it, one row: the unit tiles the panel shows, left to right
    tiles = [t.tile for t in b.view.frame.units]
    assert len(tiles) == 3 and tiles[0].shape == (80, 96, 3)  # 40 x 48 at TILE 96
    at = [_find(arr, t) for t in tiles]
    assert all(p is not None for p in at), at
    assert len({y for y, _ in at}) == 1 and at[0][0] >= main.shape[0]
    assert [x for _, x in at] == sorted(x for _, x in at)
    out = b.save(tmp_path / "view", format="composite")
    assert out == tmp_path / "view.png" and Image.open(out).size == img.size
    b.export_name.value = str(tmp_path / "ui-view")
    b.export_format.value = "composite"
    b.export_button.click()
    assert (tmp_path / "ui-view.png").exists() and "saved" in b.export_status.value


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
                    reason="kaleido needs a Chromium: install Debian's chromium")
def test_figure_export_svg_and_png_with_kaleido(net, images, tmp_path):
    b = Browser(net, images)
    svg = b.save(tmp_path / "view.svg", format="plotly")
    text = svg.read_text()
    assert text.startswith("<svg") and html.escape(CLASSES[b.class_index]) in text
    png = b.save(tmp_path / "view.png", format="plotly", scale=1)
    assert Image.open(png).size == (b.figure.layout.width, b.figure.layout.height)


def test_export_refuses_unknown_figure_format(net, images, tmp_path):
    b = Browser(net, images)
    with pytest.raises(camviz.CamvizError, match="png"):
        b.save(tmp_path / "view.bmp")


def test_display_map_is_block_means():
    m = np.arange(36, dtype=np.float32).reshape(6, 6)
    z, s = display_map(m, cells=3)
    assert s == 2
    np.testing.assert_allclose(z, m.reshape(3, 2, 3, 2).mean((1, 3)))
    z, s = display_map(m, cells=8)
    assert s == 1 and z is not None and z.shape == (6, 6)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 9), st.integers(0, 9), st.integers(0, 9), st.integers(0, 9))
def test_mask_outline_encloses_exactly_the_box_of_a_rectangle(x0, y0, w, h):
    m = np.zeros((12, 12), bool)
    m[y0:y0 + h + 1, x0:x0 + w + 1] = True
    xs, ys = mask_outline(m)
    x1, y1 = min(x0 + w, 11), min(y0 + h, 11)
    bx, by = box_path([x0, y0, x1, y1])
    assert (np.nanmin(xs), np.nanmax(xs)) == (bx[0], bx[1])
    assert (np.nanmin(ys), np.nanmax(ys)) == (by[0], by[2])


def test_browse_accepts_a_model_name_and_a_folder(tmp_path, images, monkeypatch):
    for i, im in enumerate(images[:2]):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
    net = _net()
    camviz.register_model("browse-test", lambda weights, device: net, replace=True)
    b = camviz.browse("browse-test", tmp_path)
    assert [lab for lab, _ in b.image_picker.options] == ["0.png", "1.png"]
    assert b.net is net


def test_image_change_redraws_picture_map_and_classes(net, images):
    b = Browser(net, images)
    src0, z0 = b.figure.data[0].source, np.asarray(b.figure.data[1].z).copy()
    b.image_picker.value = 2
    assert b.figure.data[0].source != src0 and b.figure.data[0].source.startswith("data:image/")
    top = b.result.topk(5).indices[0].tolist()
    assert [v for _, v in b.class_picker.options] == top and b.class_index == top[0]
    np.testing.assert_allclose(np.asarray(b.figure.data[1].z),
                               display_map(_cam01(b, top[0]))[0], atol=1e-6)
    assert not np.allclose(np.asarray(b.figure.data[1].z), z0)
    assert b.figure.layout.meta["camviz"]["image"] == 2


def test_results_kept_for_the_last_images_only(net, images):
    calls = Counter(net)
    b = Browser(net, images, keep=2)
    b.image_picker.value = 1
    b.image_picker.value = 0  # still kept
    assert calls.n == 2
    b.image_picker.value = 2  # drops image 1, the least recently shown
    b.image_picker.value = 0
    assert calls.n == 3
    b.image_picker.value = 1
    assert calls.n == 4 and len(b.cache) == 2 and 2 not in b.cache


def test_the_figure_shows_the_frame_and_a_static_figure_is_the_same(net, images):
    from camviz.widgets.figure import static_figure

    b = Browser(net, images)
    b.threshold.value = 0.35
    b.cmap.value = "viridis"
    b.opacity.value = 0.3
    b.show_box.value = False
    frame = b.view.frame
    np.testing.assert_array_equal(np.asarray(b.figure.data[1].z), frame.heat)
    np.testing.assert_array_equal(np.asarray(b.figure.data[2].x, float), frame.outline[0])
    assert list(b.figure.data[3].x) == box_path(frame.box)[0]
    assert b.figure.layout.title.text == frame.title
    assert b.figure.layout.meta["camviz"] == frame.values() == {
        k: v for k, v in b.state.items() if k != "error"}
    # what the widget shows and what a static figure of the frame shows are one figure
    static, widget = static_figure(frame, size=b.size).to_dict(), b.figure.to_dict()
    for tr in widget["data"]:
        tr.pop("uid")  # FigureWidget names its traces for the page
    assert static == widget
