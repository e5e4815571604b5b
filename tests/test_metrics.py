"""camviz.metrics: IoU, MaxBoxAcc(V2), PxAP and the CAM paper's localization numbers.

The fast all-thresholds path is checked against the one-threshold-at-a-time path (itself
checked against OpenCV in test_localize.py) on random maps of every awkward kind; PxAP is
checked against an independent per-threshold count.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from camviz import onepass
from camviz.errors import CamvizError
from camviz.localize import InvalidMap, quantise, reference_boxes_u8
from camviz.metrics import (
    BoxAccuracy,
    ClassicLocalization,
    PixelAP,
    best_iou_curve,
    box_iou,
    default_cam_thresholds,
)

box = st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20), st.integers(0, 20)).map(
    lambda b: (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))
)


# ---------------------------------------------------------------- IoU


def test_iou_inclusive_convention():
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]).tolist() == [[1.0]]  # one pixel
    assert box_iou([[0, 0, 1, 1]], [[1, 1, 2, 2]])[0, 0] == 1 / 7
    assert box_iou([[0, 0, 1, 1]], [[2, 2, 3, 3]])[0, 0] == 0.0
    # a degenerate union (non-positive) gives 0, as in the reference
    assert box_iou([[3, 3, 1, 1]], [[3, 3, 1, 1]])[0, 0] == 0.0
    with pytest.raises(CamvizError, match=r"\(n, 4\)"):
        box_iou([[0, 0, 1]], [[0, 0, 1, 1]])


@settings(max_examples=200, deadline=None)
@given(box, box)
def test_iou_symmetric_bounded_and_one_with_itself(a, b):
    ab, ba = box_iou([a], [b])[0, 0], box_iou([b], [a])[0, 0]
    assert ab == ba and 0.0 <= ab <= 1.0
    assert box_iou([a], [a])[0, 0] == 1.0


# ---------------------------------------------------------------- fast == naive


def _random_map(rng, kind):
    h, w = (int(v) for v in rng.integers(1, 30, size=2))
    if kind == 0:
        return rng.random((h, w))
    if kind == 1:
        return (rng.random((h, w)) < 0.5) * rng.random((h, w))
    if kind == 2:
        return rng.integers(0, 4, (h, w)) / 3.0
    if kind == 3:
        return np.round(rng.random((h, w)) * 5) / 5
    x = torch.from_numpy(
        rng.standard_normal((1, 1, int(rng.integers(2, 7)), int(rng.integers(2, 7))))
    )
    m = F.interpolate(x, size=(h + 20, w + 20), mode="bicubic", align_corners=False)[0, 0].numpy()
    if kind == 5:
        m = np.abs(m)
    return (m - m.min()) / (m.max() - m.min())


def _random_gt(rng, h, w):
    out = []
    for _ in range(int(rng.integers(1, 3))):
        x0, x1 = sorted(rng.integers(0, w, 2).tolist())
        y0, y1 = sorted(rng.integers(0, h, 2).tolist())
        out.append([x0, y0, x1, y1])
    return out


def test_fast_curves_equal_naive_curves_on_random_maps():
    rng = np.random.default_rng(7)
    ts = default_cam_thresholds()
    for i in range(180):
        cam = _random_map(rng, i % 6)
        gt = _random_gt(rng, *cam.shape)
        for multi in (False, True):
            fast = best_iou_curve(cam, gt, ts, multi, "fast")
            naive = best_iou_curve(cam, gt, ts, multi, "naive")
            assert np.array_equal(fast, naive), (i, multi)


def test_one_pass_kernel_is_the_default_and_is_compiled():
    assert onepass.compiled() is not None  # numba is a dependency
    cam = np.zeros((6, 6))
    cam[1:5, 1:5] = 1.0
    cam[2:4, 2:4] = 0.3  # a ring with a hole
    ts = default_cam_thresholds()
    for multi in (False, True):
        assert np.array_equal(
            best_iou_curve(cam, [[1, 1, 3, 3]], ts, multi),
            best_iou_curve(cam, [[1, 1, 3, 3]], ts, multi, "naive"),
        )


def test_without_numba_the_box_metrics_say_to_install_it(monkeypatch):
    monkeypatch.setattr(onepass, "_KERNEL", None)  # not compiled yet
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    cam = np.zeros((4, 4))
    cam[1:3, 1:3] = 1.0
    msg = (
        "the box metrics need numba: pip install numba "
        "(or pass method='naive' to best_iou_curve, about 50x slower)"
    )
    with pytest.raises(CamvizError, match=re.escape(msg)):
        best_iou_curve(cam, [[1, 1, 2, 2]])
    with pytest.raises(CamvizError, match="pip install numba"):
        BoxAccuracy().update(cam, [[1, 1, 2, 2]])
    # the oracle needs no numba
    assert best_iou_curve(cam, [[1, 1, 3, 3]], [0.5], method="naive").tolist() == [1.0]


def test_numba_cache_goes_under_the_camviz_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("CAMVIZ_CACHE", str(tmp_path))
    assert onepass.cache_dir() == str(tmp_path / "numba")
    monkeypatch.delenv("CAMVIZ_CACHE")
    assert onepass.cache_dir().endswith(os.path.join(".cache", "camviz", "numba"))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert onepass.cache_dir() == str(tmp_path / "mine")
    onepass.compiled()
    pkg = Path(onepass.__file__).parent
    assert not [f for f in pkg.rglob("*") if f.suffix in (".nbi", ".nbc")]  # nothing in camviz/


small_maps = arrays(
    np.float64,
    st.tuples(st.integers(1, 8), st.integers(1, 8)),
    elements=st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]),
)


@settings(max_examples=150, deadline=None)
@given(small_maps, box, st.booleans())
def test_fast_equals_naive_property(cam, gt, multi):
    ts = np.arange(0, 1, 0.05)
    fast = best_iou_curve(cam, [gt], ts, multi, "fast")
    assert np.array_equal(fast, best_iou_curve(cam, [gt], ts, multi, "naive"))


# shapes that stress the region rules: rings (holes), nested rings (holes inside holes, islands
# inside holes), diagonal chains (8- vs 4-connectivity), one-pixel regions, lines (area 0),
# equal copies of a shape (ties of contour area, decided by OpenCV's contour order)
LEVELS = [0.1, 0.3, 0.5, 0.7, 1.0]


@st.composite
def shape_maps(draw):
    h, w = draw(st.integers(3, 18)), draw(st.integers(3, 18))
    cam = np.full((h, w), draw(st.sampled_from([0.0, 0.0, 0.1])))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["ring", "nested", "rect", "pixel", "diag", "line", "twins"]))
        y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        hh, ww = draw(st.integers(1, h)), draw(st.integers(1, w))
        lv = draw(st.sampled_from(LEVELS))
        if kind == "rect":
            cam[y0 : y0 + hh, x0 : x0 + ww] = lv
        elif kind == "ring":
            cam[y0 : y0 + hh, x0 : x0 + ww] = lv
            cam[y0 + 1 : y0 + hh - 1, x0 + 1 : x0 + ww - 1] = draw(st.sampled_from(LEVELS))
        elif kind == "nested":  # concentric bands, each at its own level
            for d in range((min(hh, ww) + 1) // 2):
                cam[y0 + d : y0 + hh - d, x0 + d : x0 + ww - d] = draw(st.sampled_from(LEVELS))
        elif kind == "pixel":
            cam[y0, x0] = lv
        elif kind == "diag":
            step = draw(st.sampled_from([1, -1]))
            for k in range(min(hh, ww)):
                if 0 <= x0 + step * k < w and y0 + k < h:
                    cam[y0 + k, x0 + step * k] = lv
        elif kind == "line":
            cam[y0, x0 : x0 + ww] = lv
        else:  # two equal copies of a small ring or square side by side
            size = draw(st.integers(1, 4))
            inner = draw(st.sampled_from([lv, 0.0]))
            for ox in (x0, x0 + size + draw(st.integers(1, 3))):
                cam[y0 : y0 + size, ox : ox + size] = lv
                if size > 2:
                    cam[y0 + 1 : y0 + size - 1, ox + 1 : ox + size - 1] = inner
    return cam


@settings(max_examples=300, deadline=None)
@given(shape_maps(), box, st.booleans())
def test_fast_equals_naive_on_rings_chains_pixels_and_ties(cam, gt, multi):
    ts = default_cam_thresholds()
    naive = best_iou_curve(cam, [gt], ts, multi, "naive")
    assert np.array_equal(best_iou_curve(cam, [gt], ts, multi, "fast"), naive)


def _fast_and_naive(cam, gts, multi):
    ts = default_cam_thresholds()
    return (best_iou_curve(cam, gts, ts, multi, m) for m in ("fast", "naive"))


SPECIAL = {
    # a ring whose outer contour (enclosing its hole) beats a solid blob with more pixels
    "ring_beats_blob": (
        [[1, 1, 1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 1, 0, 1, 1, 1], [1, 0, 0, 0, 1, 0, 1, 1, 1],
         [1, 0, 0, 0, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 0, 1, 1, 1]]
    ),
    # two equal rings: a tie of contour areas with holes about (the exact path decides)
    "twin_rings": (
        [[1, 1, 1, 0, 1, 1, 1], [1, 0, 1, 0, 1, 0, 1], [1, 1, 1, 0, 1, 1, 1]]
    ),
    # two equal squares, no hole: OpenCV lists the last found first
    "twin_squares": ([[1, 1, 0, 0, 1, 1], [1, 1, 0, 0, 1, 1]]),
    # one-pixel regions only: all of area 0
    "pixels": ([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1]]),
    # a diagonal chain is one 8-connected region; its background is one 4-connected part
    "diagonal": ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
    # a hole inside a hole: ring, gap, ring, gap, island (levels nest as well)
    "nested": (
        [[.2, .2, .2, .2, .2, .2, .2, .2, .2], [.2, 0, 0, 0, 0, 0, 0, 0, .2],
         [.2, 0, .6, .6, .6, .6, .6, 0, .2], [.2, 0, .6, 0, 0, 0, .6, 0, .2],
         [.2, 0, .6, 0, 1, 0, .6, 0, .2], [.2, 0, .6, 0, 0, 0, .6, 0, .2],
         [.2, 0, .6, .6, .6, .6, .6, 0, .2], [.2, 0, 0, 0, 0, 0, 0, 0, .2],
         [.2, .2, .2, .2, .2, .2, .2, .2, .2]]
    ),
    # a hole touching the ring only diagonally at a corner still is a hole (4-connected)
    "corner_hole": ([[0, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 0]]),
}


@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_fast_equals_naive_on_special_maps(name):
    cam = np.asarray(SPECIAL[name], dtype=np.float64)
    h, w = cam.shape
    gts = [[x0, y0, x1, y1] for x0 in range(w) for x1 in range(x0, w) for y0, y1 in [(0, h - 1)]]
    gts += [[0, y0, w - 1, y1] for y0 in range(h) for y1 in range(y0, h)]
    for multi in (False, True):
        for gt in gts:
            fast, naive = _fast_and_naive(cam, [gt], multi)
            assert np.array_equal(fast, naive), (multi, gt)


def _kernel_flags(cam, key, multi=False):
    u8 = quantise(np.asarray(cam, dtype=np.float64))
    h, w = u8.shape
    out, undecided = np.zeros(1), np.zeros(1, dtype=bool)
    ws, added = np.empty((17, (h + 2) * (w + 2)), np.int32), np.empty((h + 2) * (w + 2), np.uint8)
    onepass.compiled()(
        u8, np.array([key], np.int64), np.array([[0, 0, 2, 2]]), multi, onepass._TABLES, ws,
        added, out, undecided,
    )
    return undecided[0]


def test_tie_with_holes_is_decided_by_contour_order():
    # two equal rings: the tied region found last in raster order is first in OpenCV's list
    # when it is top-level; the kernel checks that on the background and decides itself
    assert not _kernel_flags(SPECIAL["twin_rings"], 255)
    fast, naive = _fast_and_naive(np.asarray(SPECIAL["twin_rings"], float), [[0, 0, 3, 3]], False)
    assert np.array_equal(fast, naive)
    fast, naive = _fast_and_naive(np.asarray(SPECIAL["twin_rings"], float), [[4, 0, 7, 3]], False)
    assert np.array_equal(fast, naive)


def test_undecided_levels_take_the_exact_path(monkeypatch):
    """Levels the kernel leaves undecided are recomputed exactly (here: all of them)."""
    kernel = onepass.compiled()

    def unsure(*args):
        kernel(*args)
        args[-1][:] = True

    rng = np.random.default_rng(11)
    for i in range(12):
        cam = _random_map(rng, i % 6)
        gt = np.asarray(_random_gt(rng, *cam.shape))
        u8 = quantise(cam)
        keys = np.unique(u8[u8 > 0]).astype(np.int64)
        if not len(keys):
            continue
        for multi in (False, True):
            got = onepass.iou_by_level(u8, keys, gt, multi, unsure)
            boxes = reference_boxes_u8(u8, keys - 1, multi)  # foreground u8 > key - 1
            want = [box_iou(b, gt).max() for b in boxes]
            assert np.array_equal(got, want), (i, multi)


def test_curve_refuses_bad_maps_and_methods():
    with pytest.raises(ValueError):
        best_iou_curve(np.full((4, 4), np.nan), [[0, 0, 1, 1]])
    with pytest.raises(InvalidMap):
        best_iou_curve(np.full((4, 4), 2.0), [[0, 0, 1, 1]])
    with pytest.raises(CamvizError, match="method"):
        best_iou_curve(np.zeros((4, 4)), [[0, 0, 1, 1]], method="quick")


# ---------------------------------------------------------------- BoxAccuracy


def test_box_accuracy_reference_vectors_and_semantics():
    uni = np.array(
        [[0, 0, 0, 0, 0], [0, 0.4, 0.4, 0.4, 0.6], [0, 0.4, 1, 0.8, 0.6], [0, 0.4, 0.4, 0.4, 0.6]]
    )
    acc = BoxAccuracy(cam_thresholds=[0.0, 0.2, 0.4, 0.6, 0.8], multi_contour=False)
    acc.update(uni, [[1, 1, 4, 3]])  # hits exactly at t = 0 and 0.2
    acc.update(np.zeros((4, 5)), [[0, 0, 0, 0]])  # box (0,0,0,0) everywhere: always a hit
    out = acc.compute()
    assert out["count"] == 2
    assert out["curves"][70].tolist() == [100.0, 100.0, 100.0, 50.0, 50.0]
    assert out["MaxBoxAcc@70"] == 100.0 and out["best_threshold"][70] == 0.0
    assert out["MaxBoxAccV2"] == np.mean([out["MaxBoxAcc@30"], out["MaxBoxAcc@50"], 100.0])


def test_box_accuracy_one_threshold_for_the_whole_dataset():
    # image A is right only at low thresholds, image B only at high ones: the best single
    # threshold gets one of them, never both
    a = np.zeros((10, 10))
    a[1:9, 1:9] = 0.3
    a[4, 4] = 1.0
    acc = BoxAccuracy(cam_thresholds=[0.1, 0.5], iou_thresholds=(50,), multi_contour=False)
    acc.update(a, [[1, 1, 9, 9]])
    acc.update(a, [[4, 4, 5, 5]])
    assert acc.compute()["curves"][50].tolist() == [50.0, 50.0]
    assert acc.compute()["MaxBoxAcc@50"] == 50.0


def test_box_accuracy_batches_and_torch():
    cams = torch.zeros(2, 8, 8)
    cams[:, 2:5, 2:5] = 1.0
    acc = BoxAccuracy()
    acc.update(cams, [[[2, 2, 5, 5]], [[2, 2, 5, 5]]])
    assert acc.count == 2 and acc.last.shape == (2, 100)
    assert acc.compute()["MaxBoxAcc@70"] == 100.0
    with pytest.raises(CamvizError, match="2 maps"):
        acc.update(cams, [[[2, 2, 5, 5]]])
    with pytest.raises(CamvizError, match="update"):
        BoxAccuracy().compute()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(small_maps, box), min_size=1, max_size=4), st.booleans())
def test_adding_a_correct_image_never_lowers_accuracy(items, multi):
    ts = np.arange(0, 1, 0.1)
    acc = BoxAccuracy(cam_thresholds=ts, multi_contour=multi)
    for cam, gt in items:
        acc.update(cam, [gt])
    before = acc.compute()
    # a map whose every threshold gives exactly the ground-truth box (one-past convention)
    perfect = np.zeros((8, 8))
    perfect[2:5, 3:6] = 1.0
    acc.update(perfect, [[3, 2, 6, 5]])
    after = acc.compute()
    assert (acc.last[0] == 1.0).all()
    for d in (30, 50, 70):
        assert after[f"MaxBoxAcc@{d}"] >= before[f"MaxBoxAcc@{d}"]


# ---------------------------------------------------------------- PxAP


def _pxap_independent(pairs, ts):
    """PxAP by counting, threshold by threshold (score >= t is positive)."""
    edges = list(ts) + [1.0]
    scores_t = np.concatenate([c[g] for c, g, _ in pairs])
    scores_f = np.concatenate([c[~g & ~ig] for c, g, ig in pairs])
    prec, rec = [], []
    for t in sorted(edges, reverse=True):
        tp, fp = (scores_t >= t).sum(), (scores_f >= t).sum()
        if tp + fp == 0:
            prec.append(None)
        else:
            prec.append(tp / (tp + fp))
        rec.append(tp / len(scores_t))
    total, prev = 0.0, 0.0
    for p, r in zip(prec, rec, strict=True):
        if p is not None:
            total += p * (r - prev)
        prev = r
    return total * 100


def test_pxap_matches_an_independent_count():
    rng = np.random.default_rng(3)
    ts = default_cam_thresholds()
    px = PixelAP()
    pairs = []
    for _ in range(6):
        cam = np.round(rng.random((12, 14)), 3)
        cam[0, 0], cam[0, 1] = 1.0, 0.0
        gt = rng.random((12, 14)) < 0.3
        ign = (rng.random((12, 14)) < 0.2) & ~gt
        px.update(cam, gt.astype(np.uint8) * 255, ignore=ign | (rng.random((12, 14)) < 0.1) & gt)
        pairs.append((cam, gt, ign))
    got = px.compute()
    assert abs(got["PxAP"] - _pxap_independent(pairs, ts)) < 1e-6
    assert got["count"] == 6 and len(got["precision"]) == 102


def test_pxap_perfect_and_errors():
    px = PixelAP()
    px.update(np.array([[0.9, 0.8], [0.1, 0.0]]), np.array([[1, 1], [0, 0]]))
    assert px.compute()["PxAP"] == 100.0
    with pytest.raises(CamvizError, match="resize"):
        px.update(np.zeros((3, 3)), np.zeros((2, 2)))
    empty = PixelAP()
    empty.update(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(CamvizError, match="foreground"):
        empty.compute()


# ---------------------------------------------------------------- classic CAM-paper numbers


def test_classic_localization_counts():
    cam = np.zeros((8, 8))
    cam[2:6, 2:6] = 1.0
    loc = ClassicLocalization()
    loc.update(cam, [[2, 2, 6, 6]], label=3, topk=[3, 1, 0, 2, 4])  # hit, top-1 right
    loc.update(cam, [[2, 2, 6, 6]], label=1, topk=[3, 1, 0, 2, 4])  # hit, top-5 right
    loc.update(cam, [[0, 0, 0, 0]], label=3, topk=[3, 1, 0, 2, 4])  # miss, top-1 right
    loc.update(cam, [[2, 2, 6, 6]], label=9, topk=[3, 1, 0, 2, 4])  # hit, class wrong
    out = loc.compute()
    assert out["gt_known_loc"] == 75.0
    assert out["top1_loc"] == 25.0
    assert out["top5_loc"] == 50.0
    assert out["top1_cls"] == 50.0 and out["top5_cls"] == 75.0
    assert out["count"] == 4


# ---------------------------------------------------------------- end to end vs the reference


def _reference_test_maps():
    rng = np.random.default_rng(2020)
    out = []
    for i in range(24):
        g = int(rng.integers(3, 9))
        f = np.maximum(rng.standard_normal((g, g)), 0) if i % 2 else rng.standard_normal((g, g))
        size = (int(rng.integers(40, 120)), int(rng.integers(40, 120)))
        up = F.interpolate(
            torch.from_numpy(f)[None, None], size=size, mode="bicubic", align_corners=False
        )
        m = up[0, 0].numpy()
        m = (m - m.min()) / (m.max() - m.min())
        h, w = m.shape
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            (x0, x1), (y0, y1) = np.sort(rng.integers(0, w, 2)), np.sort(rng.integers(0, h, 2))
            boxes.append([int(x0), int(y0), int(x1), int(y1)])
        out.append((m, boxes))
    return out


# Hits per CAM threshold (run-length encoded [hits, repeat]) that the reference's BoxEvaluator
# (wsolevaluation evaluation.py: cv2 contours, calculate_multiple_iou) gives on the maps above;
# computed once with opencv-python-headless 4.8.1.
REFERENCE_HITS = {
    (False, 30): [[5, 26], [4, 19], [3, 4], [4, 1], [3, 1], [2, 7], [1, 11], [0, 31]],
    (False, 50): [[3, 24], [2, 16], [1, 11], [0, 49]],
    (False, 70): [[1, 38], [0, 62]],
    (True, 30): [
        [5, 3],
        [6, 6],
        [7, 3],
        [6, 1],
        [7, 2],
        [8, 1],
        [9, 9],
        [8, 1],
        [7, 1],
        [6, 1],
        [5, 10],
        [4, 4],
        [5, 3],
        [4, 4],
        [5, 1],
        [4, 1],
        [2, 7],
        [1, 11],
        [0, 31],
    ],
    (True, 50): [
        [3, 8],
        [4, 1],
        [3, 8],
        [4, 1],
        [6, 5],
        [5, 1],
        [4, 4],
        [3, 10],
        [2, 2],
        [1, 11],
        [0, 49],
    ],
    (True, 70): [[1, 39], [0, 61]],
}


@pytest.mark.parametrize("multi", [False, True])
def test_box_accuracy_equals_the_reference_evaluator(multi):
    acc = BoxAccuracy(multi_contour=multi)
    for cam, boxes in _reference_test_maps():
        acc.update(cam, boxes)
    for d in (30, 50, 70):
        expected = [v for v, n in REFERENCE_HITS[(multi, d)] for _ in range(n)]
        assert acc.num_correct[d].tolist() == expected, d
    out = acc.compute()
    assert out["MaxBoxAcc@50"] == max(v for v, _ in REFERENCE_HITS[(multi, 50)]) * 100.0 / 24
