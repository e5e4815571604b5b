"""camviz.onepass: the helpers of the one-pass kernel, each against an independent computation
(box_iou, scipy's connected components, scikit-image's Euler number, scipy's hole filling,
numpy's stable sort); the kernel as a whole is checked against the naive path in
test_metrics.py.

The helpers are called compiled (as the kernel runs them), after ``onepass.compiled()``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.measure import euler_number

from camviz import onepass
from camviz.metrics import best_iou_curve, box_iou


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    onepass.compiled()


coord = st.integers(-3, 12)
boxes = st.lists(st.tuples(coord, coord, coord, coord), min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(boxes, boxes)
def test_best_iou_is_the_best_of_box_iou(cand, gt):
    # any boxes, degenerate ones (x1 < x0) included: box_iou's arithmetic, to the last bit
    c = np.ascontiguousarray(np.asarray(cand, np.int32).T)
    assert onepass._best_iou(c, len(cand), np.asarray(gt, np.int64)) == box_iou(cand, gt).max()


def test_best_iou_of_no_box_is_minus_one():
    assert onepass._best_iou(np.zeros((4, 3), np.int32), 0, np.array([[0, 0, 1, 1]])) == -1.0


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 25).flatmap(lambda n: st.tuples(
    st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=n, max_size=n),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n),
)))
def test_union_find_gives_the_connected_components_with_their_boxes(graph):
    xy, edges = graph
    n = len(xy)
    parent, size = np.full(n, -1, np.int32), np.zeros(n, np.int32)
    box, live, lpos = np.zeros((4, n), np.int32), np.zeros(n, np.int32), np.full(n, -1, np.int32)
    nlive = 0
    for p in range(n):  # each node joins the sets of its neighbours already in, as in a pass
        r = -1
        for q in sorted({b for a, b in edges if a == p and b < p} | {a for a, b in edges
                                                                      if b == p and a < p}):
            r, gone = onepass._join(parent, size, box, r, q)
            if gone >= 0:
                nlive = onepass._live_drop(live, lpos, nlive, gone)
        if r < 0:
            nlive = onepass._live_add(live, lpos, nlive, p)
        onepass._add_pixel(parent, size, box, r, p, *xy[p])
    roots = np.array([onepass._find(parent, p) for p in range(n)])
    a = np.array([e[0] for e in edges] + list(range(n)))
    b = np.array([e[1] for e in edges] + list(range(n)))
    k, comp = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)))
    # the same partition, one live root per component
    assert len(set(roots.tolist())) == k and sorted(live[:nlive].tolist()) == sorted(set(roots))
    assert all(len(set(comp[roots == r])) == 1 for r in set(roots.tolist()))
    xs, ys = np.array(xy).T
    for r in set(roots.tolist()):
        m = roots == r
        assert size[r] == m.sum()
        assert box[:, r].tolist() == [xs[m].min(), ys[m].min(), xs[m].max(), ys[m].max()]


def test_union_keeps_the_root_of_the_larger_set_and_the_first_on_a_tie():
    parent, size = np.arange(4, dtype=np.int32), np.array([1, 3, 1, 1], np.int32)
    box = np.zeros((4, 4), np.int32)
    assert onepass._union(parent, size, box, 0, 1) == (1, 0)  # 1 is larger
    assert onepass._union(parent, size, box, 2, 3) == (2, 3)  # a tie: the first
    assert parent.tolist() == [1, 1, 2, 2] and size[1] == 4 and size[2] == 2


def test_ring_positions_name_the_neighbours_of_the_ring_mask():
    h, w = 3, 4
    y, x = 1, 2
    for k in range(8):
        added = np.zeros((h + 2) * (w + 2), np.uint8)
        q = onepass._ring_neighbour(y, x, k, w)  # unpadded flat index
        qy, qx = divmod(q, w)
        assert max(abs(qy - y), abs(qx - x)) == 1
        added[(qy + 1) * (w + 2) + qx + 1] = 1
        assert onepass._ring_mask(added, (y + 1) * (w + 2) + x + 1, w + 2) == 1 << k
    # the four neighbours: up, right, down, left
    assert [onepass._neighbour4(7, k, w) for k in range(4)] == [3, 8, 11, 6]


def _window_area2(fg):
    """2 x the window area: 2 per 2x2 window with four pixels, 1 per window with three."""
    f = np.pad(fg, 1).astype(int)
    s = f[:-1, :-1] + f[:-1, 1:] + f[1:, :-1] + f[1:, 1:]
    return 2 * int((s == 4).sum()) + int((s == 3).sum())


def test_tables_sum_to_the_euler_number_and_window_area():
    rng = np.random.default_rng(5)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 9, 2))
        fg = rng.random((h, w)) < rng.uniform(0.2, 0.9)
        added = np.zeros((h + 2) * (w + 2), np.uint8)
        e4 = a2 = 0
        for p in rng.permutation(np.flatnonzero(fg.ravel())):  # any order of joining
            y, x = divmod(int(p), w)
            c = (y + 1) * (w + 2) + x + 1
            ring = onepass._ring_mask(added, c, w + 2)
            added[c] = 1
            e4 += onepass._TABLES[0, ring]
            a2 += onepass._TABLES[1, ring]
        assert e4 == 4 * euler_number(np.pad(fg, 1), connectivity=2)
        assert a2 == _window_area2(fg)


def test_filled_area_is_the_window_area_of_the_region_with_its_holes_filled():
    rng = np.random.default_rng(9)
    four = ndimage.generate_binary_structure(2, 1)
    checked = 0
    for _ in range(80):
        h, w = (int(v) for v in rng.integers(1, 14, 2))
        fg = rng.random((h, w)) < rng.uniform(0.3, 0.8)
        lab, n = ndimage.label(fg, structure=np.ones((3, 3)))
        parent = np.full(h * w, -1, np.int32)
        box = np.zeros((4, h * w), np.int32)
        for g, (sy, sx) in enumerate(ndimage.find_objects(lab), start=1):
            pix = np.flatnonzero(lab.ravel() == g)
            root = pix[0]
            parent[pix] = root
            box[:, root] = (sx.start, sy.start, sx.stop - 1, sy.stop - 1)
        for g in range(1, n + 1):
            root = np.flatnonzero(lab.ravel() == g)[0]
            filled = ndimage.binary_fill_holes(lab == g, structure=four)
            got = onepass._filled_area2(parent, box, root, w)
            assert got == _window_area2(filled), (h, w, g)
            checked += filled.sum() > (lab == g).sum()
    assert checked > 10  # regions with holes were among them


def test_pixels_sorted_by_level_then_raster_order():
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (9, 13)).astype(np.uint8)
    u8[0, :5] = 7  # ties
    order, orow = np.zeros(u8.size, np.int32), np.zeros(u8.size, np.int32)
    start = onepass._sort_pixels(u8, order, orow)
    assert order.tolist() == np.argsort(u8.ravel(), kind="stable").tolist()
    assert (orow == order // 13).all()
    assert start.tolist() == [0, *np.cumsum(np.bincount(u8.ravel(), minlength=256)).tolist()]


dense_maps = arrays(
    np.float64,
    st.tuples(st.integers(1, 24), st.integers(1, 24)),
    elements=st.floats(0, 1, allow_nan=False),
)


@settings(max_examples=120, deadline=None)
@given(dense_maps, st.tuples(*[st.integers(0, 23)] * 4))
def test_fast_equals_naive_on_dense_random_maps_in_both_modes(cam, b):
    gt = [[min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])]]
    for multi in (False, True):
        fast = best_iou_curve(cam, gt, None, multi, "fast")
        assert np.array_equal(fast, best_iou_curve(cam, gt, None, multi, "naive")), multi
