"""The browser's view model and result cache, driven directly (no widgets): each frame shows what
camviz.localize and camviz.units say for its state, unit tiles and the gallery use one threshold
level, parts are reused when what they depend on did not change, and the network runs once per
image."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import camviz
from camviz.galleries import unit_gallery
from camviz.localize import boxes, mask
from camviz.render import outline
from camviz.units import threshold_masks
from camviz.widgets.cache import ResultCache
from camviz.widgets.drawing import display_map, mask_outline
from camviz.widgets.tiles import draw_edge
from camviz.widgets.view import ErrorFrame, Frame, ViewModel, ViewState, find_classes

CLASSES = ["cat", "<b>x</b>", "dog", "eel", "fox", "gnu"]
WIDGETS = Path(camviz.__file__).parent / "widgets"


def _net() -> camviz.GapNet:
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=4, padding=1), nn.ReLU(),
    )
    return camviz.GapNet(features, nn.Linear(16, len(CLASSES)), classes=CLASSES, device="cpu",
                         transform=camviz.Preprocess(resize=(40, 48)))


class Attempts:
    """Counts calls of ``net.run`` (also those that fail), restored by monkeypatch."""

    def __init__(self, net: camviz.GapNet, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        run = net.run

        def counted(*args: object, **kwargs: object) -> camviz.CamResult:
            self.n += 1
            return run(*args, **kwargs)

        monkeypatch.setattr(net, "run", counted)


@pytest.fixture(scope="module")
def net() -> camviz.GapNet:
    return _net()


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((40, 48, 3)) * 255).astype(np.uint8) for _ in range(3)]


@pytest.fixture(scope="module")
def data(net, images) -> list[torch.Tensor]:
    return [net.transform(im) for im in images] * 2


@pytest.fixture(scope="module")
def stats(net, data) -> camviz.UnitStats:
    # a level far from the 0.995 default: tiles at the wrong level would differ
    return camviz.scan(net, data, cache=False, progress=False, top_n=4, level=0.5)


def _vm(net, images, **kw) -> ViewModel:
    return ViewModel(ResultCache(net, images), **kw)


def _res(vm: ViewModel) -> camviz.CamResult:
    view = vm.cache.get(vm.state.image)
    assert not isinstance(view, Exception)
    return view.res


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(0, len(CLASSES) - 1), st.integers(0, 2))
def test_frame_map_mask_box_are_those_of_localize(net, images, t, c, i):
    vm = _vm(net, images, units=0)
    frame = vm.set(image=i, cls=c, threshold=t)
    assert isinstance(frame, Frame) and frame.state.cls == c and frame.class_name == CLASSES[c]
    cam = _res(vm).cams(c, size="input", normalize=True)[0, 0].numpy()
    np.testing.assert_array_equal(frame.cam01, cam)
    assert frame.cam01.shape == (40, 48) and frame.cam01.min() >= 0 and frame.cam01.max() <= 1
    np.testing.assert_array_equal(frame.mask, mask(cam, t))
    bb = boxes(cam, t)
    if len(bb):
        np.testing.assert_array_equal(frame.box, bb[0])
    else:
        assert frame.box is None
    for got, want in zip(frame.outline, mask_outline(mask(cam, t)), strict=True):
        np.testing.assert_array_equal(got, want)
    heat, step = display_map(cam)
    np.testing.assert_array_equal(frame.heat, heat)
    assert frame.heat_step == step
    assert frame.prob == pytest.approx(float(_res(vm).probs[0, c]))
    assert f"threshold {t:.2f}" in frame.title and "&lt;b&gt;" in vm.set(cls=1).title


def test_unit_tiles_without_stats_mask_at_the_threshold(net, images):
    vm = _vm(net, images, units=4)
    for order in ("weight", "contribution"):
        frame = vm.set(unit_order=order, threshold=0.6)
        u = _res(vm).units(frame.state.cls, k=4, order=order)
        assert [t.unit for t in frame.units] == u.ids[0].tolist()
        np.testing.assert_allclose([t.weight for t in frame.units], u.weights[0], rtol=1e-6)
        np.testing.assert_allclose([t.share for t in frame.units], u.share[0], rtol=1e-6)
        up = F.interpolate(_res(vm).unit_maps(u.ids[0]), size=(80, 96), mode="bilinear",
                           align_corners=False)[0]
        for j, tile in enumerate(frame.units):
            np.testing.assert_array_equal(tile.mask, mask(up[j], 0.6).numpy())
            assert tile.area == pytest.approx(tile.mask.mean()) and tile.tile.shape == (80, 96, 3)
    assert not frame.dataset_masks and frame.values()["units"] == [t.unit for t in frame.units]


@pytest.mark.parametrize("level", [None, 0.9])
def test_tiles_and_gallery_use_the_same_threshold_level(net, images, data, stats, level):
    vm = _vm(net, images, stats=stats, dataset=data, units=3, gallery=3, level=level)
    frame = vm.frame
    assert isinstance(frame, Frame) and frame.dataset_masks
    t_all = stats.thresholds(level)  # None: the scan's own level, 0.5
    np.testing.assert_array_equal(vm.unit_thresholds(), t_all)
    ids = torch.tensor([t.unit for t in frame.units])
    want = threshold_masks(_res(vm).unit_maps(ids), t_all[ids], size=(80, 96))[0].numpy()
    at_default = threshold_masks(_res(vm).unit_maps(ids), stats.thresholds(0.995)[ids],
                                 size=(80, 96))[0].numpy()
    got = np.stack([t.mask for t in frame.units])
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, at_default)  # the old tiles (always 0.995) would fail here
    np.testing.assert_allclose([t.area for t in frame.units], want.reshape(3, -1).mean(1))
    unit = frame.units[0].unit
    detail = vm.set(unit=unit).detail
    assert detail is not None and detail.unit == unit and detail.error is None
    np.testing.assert_array_equal(
        detail.gallery, np.asarray(unit_gallery(net, data, stats, unit, n=3, level=level)))
    other = np.asarray(unit_gallery(net, data, stats, unit, n=3, level=0.995))
    assert not np.array_equal(detail.gallery, other)
    idx, val = stats.top_images(unit, 3)
    assert detail.top == tuple((int(i), float(v)) for i, v in zip(idx, val, strict=True))


def test_dataset_masks_ignore_the_threshold_and_parts_are_reused(net, images, stats):
    vm = _vm(net, images, stats=stats, units=3)
    a = vm.frame
    b = vm.set(threshold=0.7)
    assert b.units is a.units and b.heat is a.heat and b.mask is not a.mask
    c = vm.set(opacity=0.1, show_box=False, show_mask=False)
    assert (c.units, c.heat, c.mask, c.outline, c.box) == (b.units, b.heat, b.mask, b.outline,
                                                           b.box)
    d = vm.set(cmap="gray")
    assert d.units is not c.units and d.mask is c.mask
    np.testing.assert_array_equal([t.mask for t in d.units], [t.mask for t in c.units])
    plain = _vm(net, images, units=3)
    assert plain.set(threshold=0.7).units is not plain.set(threshold=0.3).units


def test_selected_unit_numbers_and_top_images(net, images, stats):
    vm = _vm(net, images, units=2)
    frame = vm.set(cls=2, unit=5)
    res, d = _res(vm), frame.detail
    assert d is not None and d.unit == 5 and d.top is None and d.gallery is None
    assert d.weight == pytest.approx(float(res.weight[2, 5]))
    assert d.pooled == pytest.approx(float(res.pooled()[0, 5]))
    every = res.units(2, k=16)
    j = every.ids[0].tolist().index(5)
    assert d.contribution == pytest.approx(float(every.contributions[0, j]), rel=1e-6)
    assert d.share == pytest.approx(float(every.share[0, j]), rel=1e-5)
    assert vm.set(cls=3).detail is None  # a new class deselects the unit
    with_stats = _vm(net, images, stats=stats).set(unit=5).detail
    assert with_stats is not None and with_stats.gallery is None  # no dataset: indices only
    assert with_stats.top == tuple((int(i), float(v)) for i, v in zip(
        *stats.top_images(5, 6), strict=True))


def test_state_rules_and_errors(net, images):
    vm = _vm(net, images, k=2)
    first = vm.frame
    top = _res(vm).topk(2).indices[0].tolist()
    assert first.state.cls == top[0] and [c for _, c in first.class_options] == top
    outside = next(c for c in range(len(CLASSES)) if c not in top)
    frame = vm.set(cls=CLASSES[outside], unit=3)
    assert frame.state.cls == outside and frame.state.unit == 3
    assert frame.class_options[-1] == (
        f"{CLASSES[outside]}  {float(_res(vm).probs[0, outside]):.1%} (not in top 2)", outside)
    frame = vm.set(image=1)
    assert frame.state.unit is None and frame.state.cls == _res(vm).topk(1).indices[0, 0]
    with pytest.raises(camviz.CamvizError, match="unknown class 'nope'"):
        vm.set(cls="nope")
    with pytest.raises(camviz.CamvizError, match=r"unit 16 out of range 0\.\.15"):
        vm.set(unit=16)
    with pytest.raises(camviz.CamvizError, match=r"no such view setting: \['colour'\]"):
        vm.set(colour="red")
    with pytest.raises(camviz.CamvizError, match="unknown colour map 'rainbow'"):
        vm.set(cmap="rainbow")
    with pytest.raises(camviz.CamvizError, match="unit_order must be"):
        ViewState(unit_order="size")
    assert vm.state.image == 1 and vm.state.cmap == "jet"  # refused changes changed nothing
    with pytest.raises(camviz.CamvizError, match="3 units"):
        _vm(net, images, stats=camviz.UnitStats.empty(units=3, classes=CLASSES))


def test_one_pass_per_image_and_errors_are_cached_as_errors(net, images, monkeypatch):
    calls = Attempts(net, monkeypatch)
    bad = torch.rand(5, 40, 48)  # five channels: the network cannot take it
    cache = ResultCache(net, [images[0], bad, images[1]], keep=2)
    vm = ViewModel(cache, units=3)
    for change in ({"threshold": 0.3}, {"cls": 4}, {"unit_order": "contribution"},
                   {"cmap": "gray"}, {"opacity": 0.9}, {"unit": 2}):
        assert isinstance(vm.set(**change), Frame)
    assert calls.n == 1 and cache.forward_passes == 1
    err = vm.set(image=1)
    assert isinstance(err, ErrorFrame) and err.state.cls is None
    assert err.message.startswith("could not show image 1: ") and err.values()["units"] == []
    vm.set(threshold=0.5)
    assert isinstance(vm.set(image=1), ErrorFrame) and calls.n == 2  # the error was kept
    assert cache.forward_passes == 1  # only passes that gave a result
    vm.set(image=2)
    assert calls.n == 3 and len(cache) == 2 and 0 not in cache  # keep=2: image 0 dropped
    vm.set(image=0)
    assert calls.n == 4 and cache.forward_passes == 3 and cache.shown == 3


def test_view_model_cache_and_drawing_import_no_widgets_and_no_scan():
    def imports(path: Path) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        return names

    plain = {"view", "cache", "drawing", "tiles", "timing"}  # no ipywidgets, no plotly
    for name in plain:
        found = imports(WIDGETS / f"{name}.py")
        heavy = {m for m in found if m.split(".")[0] in ("ipywidgets", "plotly", "anywidget")}
        local = {m for m in found if m.startswith("camviz.widgets")}
        assert not heavy and local <= {f"camviz.widgets.{n}" for n in plain}, name
    for path in WIDGETS.glob("*.py"):
        assert "camviz.scan" not in imports(path), path.name  # widgets show stats, never make them


@pytest.mark.parametrize("with_stats", [False, True])
def test_a_selected_unit_is_on_the_main_view_with_its_mask(net, images, stats, with_stats):
    vm = _vm(net, images, stats=stats if with_stats else None, units=3)
    class_frame = vm.set(threshold=0.4)
    unit = class_frame.units[1].unit
    frame = vm.set(unit=unit)
    assert frame.values()["shown"] == "unit" and frame.main.label == "unit activation"
    raw = _res(vm).unit_maps([unit])
    up = F.interpolate(raw, size=(40, 48), mode="bilinear", align_corners=False)[0, 0]
    lo, hi = float(up.min()), float(up.max())
    np.testing.assert_allclose(frame.cam01, ((up - lo) / (hi - lo)).numpy(), atol=1e-6)
    if with_stats:  # the tiles' rule: above the unit's dataset quantile
        t = stats.thresholds(None)
        want = threshold_masks(raw, t[[unit]], size=(40, 48))[0, 0].numpy()
        mark = (float(t[unit]) - lo) / (hi - lo)
        assert "mask: dataset quantile" in frame.title
    else:  # above threshold x its max
        want = mask(up, 0.4).numpy()
        mark = (0.4 * hi - lo) / (hi - lo)
        assert "mask: threshold 0.40" in frame.title
    np.testing.assert_array_equal(frame.mask, want)
    assert frame.main.mark == (pytest.approx(mark) if 0 <= mark <= 1 else None)
    bb = boxes(want.astype(np.float32), 0.5)
    assert (frame.box is None) if not len(bb) else np.array_equal(frame.box, bb[0])
    assert f"<b>unit {unit}</b> of" in frame.title
    assert vm.set(opacity=0.2).main is frame.main  # kept until another class or unit
    assert vm.set(cls=(frame.state.cls + 1) % 6).values()["shown"] == "class"
    back = vm.set(unit=None)
    assert back.main.label == "normalised CAM" and back.main.mark == back.state.threshold


def test_a_gallery_of_another_dataset_is_refused_with_a_message(net, images, data, stats):
    unit = 3
    rng = torch.Generator().manual_seed(5)
    other = [torch.rand(3, 40, 48, generator=rng) for _ in data]  # same length, other images
    for dataset, want in ((other, "is not the dataset that was scanned"),
                          (data[:4], "dataset= has 4 images but the statistics were scanned "
                                     f"on {len(data)}")):
        vm = _vm(net, images, stats=stats, dataset=dataset, units=2, gallery=3)
        detail = vm.set(unit=unit).detail
        assert detail is not None and detail.gallery is None and want in detail.error
        assert detail.top is not None  # the scan's indices are still listed
    good = _vm(net, images, stats=stats, dataset=data, units=2, gallery=3).set(unit=unit)
    assert good.detail.error is None and good.detail.gallery is not None


def test_find_classes_ranks_exact_prefix_word_then_substring():
    names = ["tiger shark", "Tiger", "Bengal tiger", "ligertiger", "tabby"]
    assert find_classes(names, "TIGER") == [1, 0, 2, 3]
    assert find_classes(names, "  tig  ") == [0, 1, 2, 3]  # no exact name: prefixes first
    assert find_classes(names, "x") == [] and find_classes(names, "") == []
    assert find_classes(names, "ger", limit=2) == [0, 1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="abAB -", min_size=1, max_size=6), min_size=1, max_size=12),
       st.text(alphabet="abAB", min_size=1, max_size=3))
def test_find_classes_finds_exactly_the_names_containing_the_text(names, text):
    found = find_classes(names, text, limit=len(names))
    q = text.casefold()
    assert sorted(found) == [i for i, n in enumerate(names) if q in n.casefold()]
    exact = [i for i in found if names[i].casefold() == q]
    assert found[: len(exact)] == exact  # exact names first


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**31 - 1), st.floats(0.1, 0.9))
def test_tile_edges_are_those_of_render_outline(h, w, seed, p):
    rng = np.random.default_rng(seed)
    m = rng.random((h, w)) < p
    img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(draw_edge(img, m, (255, 255, 255)),
                                  outline(img, m, color=(255, 255, 255)))
