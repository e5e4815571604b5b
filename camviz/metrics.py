"""WSOL metrics with the reference protocol's exact semantics (clovaai/wsolevaluation).

* :func:`box_iou` — IoU of inclusive boxes (``+1`` on widths and heights; a non-positive union
  gives 0).
* :class:`BoxAccuracy` — MaxBoxAcc at IoU 30/50/70 and MaxBoxAccV2 (their mean); with
  ``multi_contour=False`` and IoU 50 it is the original MaxBoxAcc (V1).
* :class:`PixelAP` — PxAP, pixel average precision over dataset-pooled score histograms.
* :class:`ClassicLocalization` — the CAM paper's GT-known / top-1 / top-5 localization at one
  fixed threshold.

Box metrics give the reference's numbers to the last digit: they are built on
:func:`camviz.localize.reference_boxes`' rules. The per-map work is done by
:func:`best_iou_curve`, which finds the boxes of all thresholds in one pass over the pixels —
the regions of a map at nested thresholds are nested, so a union-find adding pixels from the top
level down (compiled by numba, cached under ``~/.cache/camviz/numba``) sees every threshold's
regions on the way — instead of labelling the map once per threshold (``method="naive"`` does
that, for checking and benchmarks; ``method="numpy"`` is a vectorised path that relabels only
where the structure changes, used when numba is missing).

Example:
    >>> import numpy as np
    >>> acc = BoxAccuracy(cam_thresholds=np.arange(0, 1, 0.1))
    >>> cam = np.zeros((8, 8)); cam[2:6, 2:6] = 1.0
    >>> acc.update(cam, np.array([[2, 2, 5, 5]]))  # the reference's box is (2, 2, 6, 6)
    >>> acc.compute()["MaxBoxAcc@50"], acc.compute()["MaxBoxAcc@70"]
    (100.0, 0.0)
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from skimage.morphology import local_maxima, local_minima

from camviz.errors import CamvizError
from camviz.localize import (
    PAPER_THRESHOLD,
    _Contours,
    _reference_boxes_u8,
    quantise,
    reference_thresholds,
)

__all__ = [
    "box_iou",
    "best_iou_curve",
    "BoxAccuracy",
    "PixelAP",
    "ClassicLocalization",
    "default_cam_thresholds",
]

_EIGHT = np.ones((3, 3), dtype=bool)
_FOUR = ndimage.generate_binary_structure(2, 1)


def default_cam_thresholds(step: float = 0.01) -> np.ndarray:
    """The reference's CAM thresholds ``np.arange(0, 1, step)`` (100 values for 0.01).

    Example:
        >>> len(default_cam_thresholds()), len(default_cam_thresholds(0.001))
        (100, 1000)
    """
    return np.arange(0, 1, step)


def _np(x: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _boxes_arg(b: Any) -> np.ndarray:
    b = _np(b, np.int64)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise CamvizError(f"boxes must be (n, 4) x0 y0 x1 y1; got shape {b.shape}")
    return b


def box_iou(a: Any, b: Any) -> np.ndarray:
    """IoU of every box in ``a`` (n, 4) with every box in ``b`` (m, 4) -> (n, m), float64.

    Boxes are inclusive ``(x0, y0, x1, y1)``: area ``(x1 - x0 + 1) * (y1 - y0 + 1)``, the same
    +1 for the intersection; a non-positive union gives 0 (the reference's
    ``calculate_multiple_iou``).

    Example:
        >>> box_iou([[0, 0, 1, 1]], [[0, 0, 1, 1], [1, 1, 2, 2], [5, 5, 6, 6]]).tolist()
        [[1.0, 0.14285714285714285, 0.0]]
    """
    a, b = _boxes_arg(a), _boxes_arg(b)
    return _iou(a[:, None, :], b[None, :, :])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Broadcasting IoU over the last axis (x0, y0, x1, y1), the reference's arithmetic."""
    ix = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    iy = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = ix * iy
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    den = area_a + area_b - inter
    bad = den <= 0
    out = inter / np.where(bad, 1, den)
    return np.where(bad, 0.0, out)


# --------------------------------------------------------------------------------------------
# best IoU per threshold, all thresholds at once
# --------------------------------------------------------------------------------------------


class _Map:
    """Per-map precomputation shared by every threshold (quantised levels, 2x2 windows)."""

    def __init__(self, u8: np.ndarray) -> None:
        self.u8 = u8
        self.h, self.w = u8.shape
        p = np.pad(u8, 1)
        a, b, c, d = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]
        lo1, hi1, lo2, hi2 = np.minimum(a, b), np.maximum(a, b), np.minimum(c, d), np.maximum(c, d)
        m1, m2 = np.minimum(hi1, hi2), np.maximum(lo1, lo2)
        # sorted window levels v1 >= v2 >= v3 >= v4
        self.v = (
            np.maximum(hi1, hi2),
            np.maximum(m1, m2),
            np.minimum(m1, m2),
            np.minimum(lo1, lo2),
        )
        # windows whose two top pixels are diagonal: they hold exactly a diagonal pair for
        # levels in (dlo, dhi]
        ad_lo, ad_hi = np.minimum(a, d), np.maximum(a, d)
        bc_lo, bc_hi = np.minimum(b, c), np.maximum(b, c)
        da, db = ad_lo > bc_hi, bc_lo > ad_hi
        zero = np.zeros_like(a)
        self.dhi = np.where(da, ad_lo, np.where(db, bc_lo, zero))
        self.dlo = np.where(da, bc_hi, np.where(db, ad_hi, zero))
        def hist(v: np.ndarray) -> np.ndarray:
            return np.bincount(v.ravel(), minlength=256).astype(np.int64)

        h1, h2, h3, h4 = (hist(v) for v in self.v)
        hd = hist(self.dhi) - hist(self.dlo)
        #: 4 x Euler number and 2 x window area of the whole foreground at every level
        self.euler4 = _suffix(h1 - h2 - h3 + h4 - 2 * hd)
        self.area2 = _suffix(h3 + h4)
        self.rowmax = u8.max(axis=1)
        self.colmax = u8.max(axis=0)
        self._minima: tuple[np.ndarray, np.ndarray] | None = None
        mx = local_maxima(u8, connectivity=2)
        plab, n = ndimage.label(mx, structure=_EIGHT)
        first = np.unique(plab.ravel(), return_index=True)[1][1:]  # one pixel per plateau
        self.max_pix = first
        self.max_lev = u8.ravel()[first].astype(np.int64)

    def minima(self) -> tuple[np.ndarray, np.ndarray]:
        """One pixel (flat index) and the level of every 4-connected regional minimum that does
        not touch the border: the only places where a hole can be born as the level rises."""
        if self._minima is None:
            if min(self.h, self.w) < 3:  # every pixel touches the border
                self._minima = (np.zeros(0, np.int64), np.zeros(0, np.int64))
            else:
                m = local_minima(self.u8, connectivity=1, allow_borders=False)
                mlab, _ = ndimage.label(m, structure=_FOUR)
                first = np.unique(mlab.ravel(), return_index=True)[1][1:]
                self._minima = (first, self.u8.ravel()[first].astype(np.int64))
        return self._minima

    def crop(self, level: int) -> tuple[slice, slice]:
        ys = np.flatnonzero(self.rowmax >= level)
        xs = np.flatnonzero(self.colmax >= level)
        return slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1)


def _suffix(counts: np.ndarray) -> np.ndarray:
    """counts[..., level] -> number with level >= L, for every L."""
    return counts[..., ::-1].cumsum(-1)[..., ::-1]


def _exact_boxes(
    mp: _Map, level: int, multi: bool, labels: tuple[Any, ...] | None = None
) -> np.ndarray:
    sy, sx = mp.crop(level)
    c = _Contours(mp.u8[sy, sx] >= level, labels)
    if multi:
        raw = np.concatenate([c.outer_rects(), c.hole_rects()])
    else:
        areas = c.outer_areas()
        best = np.flatnonzero(areas == areas.max())
        if len(best) > 1:
            best = best[np.argsort(c.tree_order()[best], kind="stable")]
        raw = c.outer_rects()[best[:1]]
    raw = raw + np.array([sx.start, sy.start, sx.start, sy.start])
    raw[:, 2] = np.minimum(raw[:, 2], mp.w - 1)
    raw[:, 3] = np.minimum(raw[:, 3], mp.h - 1)
    return raw


def _per_group(
    mp: _Map, pix: np.ndarray, lev: np.ndarray, lab: np.ndarray, sy: slice, sx: slice, G: int
) -> tuple[np.ndarray, np.ndarray]:
    """Group (region label at the run's start) and level of the given pixels inside the crop."""
    y, x = np.divmod(pix, mp.w)
    inside = (y >= sy.start) & (y < sy.stop) & (x >= sx.start) & (x < sx.stop)
    g = np.zeros(len(pix), dtype=np.int64)
    g[inside] = lab[y[inside] - sy.start, x[inside] - sx.start]
    return g, lev


def _count_at_least(g: np.ndarray, lev: np.ndarray, G: int, ks: np.ndarray) -> np.ndarray:
    cnt = np.bincount(g * 256 + lev, minlength=(G + 1) * 256).reshape(G + 1, 256)
    return _suffix(cnt)[1:, :][:, ks]


def _run(mp: _Map, keys: np.ndarray, gt: np.ndarray, multi: bool, out: dict[int, float]) -> int:
    """Handle keys[0] and the following keys for as long as the regions found at keys[0] are
    known (from Euler numbers, maxima and minima) to stay one region each. Returns how many
    keys were handled."""
    L0 = int(keys[0])
    sy, sx = mp.crop(L0)
    sub = mp.u8[sy, sx]
    fg0 = sub >= L0
    lab, G = ndimage.label(fg0, structure=_EIGHT)
    blab, nb = ndimage.label(np.pad(~fg0, 1, constant_values=True), structure=_FOUR)
    if nb > 1 and not multi and G == 1:  # one region: its holes cannot change the box
        y, x = ndimage.find_objects(lab)[0]
        bx = np.array(
            [[sx.start + x.start, sy.start + y.start, sx.start + x.stop, sy.start + y.stop]]
        )
        bx[:, 2], bx[:, 3] = np.minimum(bx[:, 2], mp.w - 1), np.minimum(bx[:, 3], mp.h - 1)
        out[L0] = float(_iou(bx[:, None], gt[None]).max())
        return 1
    if nb > 1:  # holes right now: the exact path
        bx = _exact_boxes(mp, L0, multi, (lab, G, blab, nb))
        out[L0] = float(_iou(bx[:, None], gt[None]).max())
        return 1
    ks = keys.astype(np.int64)

    if G == 1:
        # windows outside the one region have every level < L0: the map's own histograms
        e4, a2 = mp.euler4[None, ks], mp.area2[None, ks]
    else:
        # windows of the crop (with a one-pixel margin), each owned by one region of L0
        y0, y1, x0, x1 = sy.start, sy.stop + 1, sx.start, sx.stop + 1
        labp = np.pad(lab, 1)
        wg = np.maximum(
            np.maximum(labp[:-1, :-1], labp[:-1, 1:]), np.maximum(labp[1:, :-1], labp[1:, 1:])
        ).ravel()
        nbin = (G + 1) * 256
        base = wg.astype(np.int64) * 256

        def counts(v: np.ndarray) -> np.ndarray:
            return np.bincount(base + v[y0:y1, x0:x1].ravel(), minlength=nbin)

        c1, c2, c3, c4 = (counts(v) for v in mp.v)
        cd = counts(mp.dhi) - counts(mp.dlo)
        e4 = _suffix((c1 - c2 - c3 + c4 - 2 * cd).reshape(G + 1, 256))[1:, :][:, ks]
        a2 = _suffix((c3 + c4).reshape(G + 1, 256))[1:, :][:, ks]
    chi = e4 // 4  # Euler number (8-connected) of each region's part >= L
    area = 0.5 * a2  # contourArea of each region's outer contour where it has no hole

    # C <= number of regional maxima; holes can only be born at interior minima
    gm, lm = _per_group(mp, mp.max_pix, mp.max_lev, lab, sy, sx, G)
    nmax = _count_at_least(gm, lm, G, ks)
    mpix, mlev = mp.minima()
    gn, ln = _per_group(mp, mpix, mlev, lab, sy, sx, G)
    keep = ln >= L0
    births = _count_at_least(gn[keep], ln[keep], G, ks)  # minima with level >= L
    births = births[:, :1] - births  # minima with L0 <= level < L
    one_max = nmax == 1
    holes_one = one_max & (chi < 1)  # one region, so holes = 1 - chi
    sure = one_max | (nmax == 0) | ((births == 0) & (chi <= 1))
    ok = sure.all(axis=0)
    ok[0] = True
    k = len(ks) if ok.all() else max(int(np.argmin(ok)), 1)
    ks, chi, area, holes = ks[:k], chi[:, :k], area[:, :k], holes_one[:, :k].any(axis=0)
    # a region exists when its Euler number is positive, or (one maximum) when it has holes
    alive = (chi >= 1) | holes_one[:, :k]
    if not multi:
        holes &= False  # single mode reads outer contours only; see below
    # bounding boxes of each region's part >= L, for every L
    boxes = np.zeros((G, len(ks), 4), dtype=np.int64)
    for g, (ry, rx) in enumerate(ndimage.find_objects(lab)):
        piece = np.where(lab[ry, rx] == g + 1, sub[ry, rx], 0)
        rows, cols = piece.max(axis=1), piece.max(axis=0)
        fy, fx = np.maximum.accumulate(rows), np.maximum.accumulate(cols)
        by, bx = np.maximum.accumulate(rows[::-1]), np.maximum.accumulate(cols[::-1])
        oy, ox = sy.start + ry.start, sx.start + rx.start
        boxes[g, :, 0] = ox + np.searchsorted(fx, ks)
        boxes[g, :, 1] = oy + np.searchsorted(fy, ks)
        boxes[g, :, 2] = ox + len(cols) - np.searchsorted(bx, ks)  # last + 1
        boxes[g, :, 3] = oy + len(rows) - np.searchsorted(by, ks)
    boxes[..., 2] = np.minimum(boxes[..., 2], mp.w - 1)
    boxes[..., 3] = np.minimum(boxes[..., 3], mp.h - 1)
    iou = _iou(boxes[:, :, None, :], gt[None, None]).max(axis=2)  # (G, k)

    if multi:
        best = np.where(alive, iou, -1.0).max(axis=0)
        exact = holes
    else:
        # a region with holes has a larger outer contour than its windows say: exact path.
        # Otherwise the largest area wins; a tie is settled by OpenCV's contour order.
        area = np.where(alive, area, -1.0)
        winners = area == area.max(axis=0)[None]
        best = iou[winners.argmax(axis=0), np.arange(len(ks))]
        several = alive.sum(axis=0) > 1
        exact = (holes_one[:, :k].any(axis=0) & several) | (winners.sum(axis=0) > 1)
    for j, L in enumerate(ks.tolist()):
        if exact[j]:
            out[L] = float(_iou(_exact_boxes(mp, L, multi)[:, None], gt[None]).max())
        else:
            out[L] = float(best[j])
    return len(ks)


# --------------------------------------------------------------------------------------------
# one pass over the pixels for all thresholds (union-find; compiled with numba when present)
# --------------------------------------------------------------------------------------------

# The eight neighbours of a pixel as a ring, bit k of a ring mask: 0 top-left, 1 top, 2 top-right,
# 3 right, 4 bottom-right, 5 bottom, 6 bottom-left, 7 left.
_RING_DY = (-1, -1, -1, 0, 1, 1, 1, 0)
_RING_DX = (-1, 0, 1, 1, 1, 0, -1, -1)


def _ring_tables() -> np.ndarray:
    """Per ring mask of the neighbours already in: the change of 4 x the Euler number
    (8-connected, Gray's bit quads) and of 2 x the window area when the pixel joins, the
    number of runs of neighbours round the ring (each run is in one region already) and one
    neighbour of each run. Rows: 0 Euler, 1 area, 2 runs, 3-6 run positions."""
    # 4 x Euler number of a 2x2 window by its mask (1 top-left, 2 top-right, 4 bottom-left,
    # 8 bottom-right), and its pixel count
    quad = [0, 1, 1, 0, 1, 0, -2, -1, 1, -2, 0, -1, 0, -1, -1, 0]
    tab = np.zeros((7, 256), dtype=np.int64)
    for ring in range(256):
        n = [(ring >> k) & 1 for k in range(8)]
        tl, t, tr, r, br, b, bl, lf = n
        # the pixel's four windows (its own bit: 8, 4, 2, 1)
        olds = [tl | t << 1 | lf << 2, t | tr << 1 | r << 3, lf | bl << 2 | b << 3,
                r << 1 | b << 2 | br << 3]
        for old, me in zip(olds, (8, 4, 2, 1), strict=True):
            new = old | me
            tab[0, ring] += quad[new] - quad[old]
            tab[1, ring] += bin(new).count("1") >= 3
        starts = [k for k in range(8) if n[k] and not n[k - 1]]
        if ring == 255:
            starts = [0]
        tab[2, ring] = len(starts)
        tab[3 : 3 + len(starts), ring] = starts
    return tab


_TABLES = _ring_tables()


def _curve_kernel(
    u8: np.ndarray, keys: np.ndarray, gt: np.ndarray, multi: bool, tables: np.ndarray,
    ws: np.ndarray, added: np.ndarray, out: np.ndarray, undecided: np.ndarray,
) -> None:
    """Best IoU at every key level (foreground ``u8 >= key``; keys ascending, each with some
    foreground) in one pass.

    Foreground: pixels join an 8-connected union-find from the top level down; each region
    keeps its bounding box, its first pixel in raster order, 4 x its Euler number and 2 x the
    contourArea of its outer contour where it has no hole, both summed over the 2x2 windows
    (the pixels of a window are always in one region). Holes (multi mode): the background
    joins a 4-connected union-find from the bottom level up; a part that does not reach the
    border is one hole contour. Single mode: a level whose winner cannot be decided from those
    sums (a region with holes whose area might compete, or a tie while holes exist) is marked
    in ``undecided`` for the exact path.
    """
    H, W = u8.shape
    N = H * W
    W2 = W + 2
    rdy = np.array((-1, -1, -1, 0, 1, 1, 1, 0))
    rdx = np.array((-1, 0, 1, 1, 1, 0, -1, -1))
    K = keys.shape[0]
    flat = u8.ravel()
    start = np.zeros(257, np.int64)
    for p in range(N):
        start[flat[p] + 1] += 1
    for v in range(256):
        start[v + 1] += start[v]
    # the work space is reused between calls (no fresh pages to fault in for every map)
    order, parent, size, live, lpos = ws[0], ws[1], ws[2], ws[3], ws[4]
    bx0, by0, bx1, by1 = ws[5], ws[6], ws[7], ws[8]
    area2, euler4, first = ws[9], ws[10], ws[11]
    cb0, cb1, cb2, cb3 = ws[12], ws[13], ws[14], ws[15]  # candidate boxes of one level
    orow = ws[16]  # the row of each pixel in ``order`` (no division in the loops)
    fill = start[:256].copy()
    for yy in range(H):
        for xx in range(W):
            p = yy * W + xx
            v = flat[p]
            order[fill[v]] = p
            orow[fill[v]] = yy
            fill[v] += 1
    parent[:N] = -1
    added[:] = 0
    nlive = 0
    ki = K - 1
    lowest = keys[0]
    e4all = 0  # 4 x the Euler number of the whole foreground: regions - holes
    holed = np.zeros(K, np.bool_)
    tiefirst = np.zeros(K, np.int64)
    for v in range(255, lowest - 1, -1):
        for idx in range(start[v], start[v + 1]):
            p = order[idx]
            y = orow[idx]
            x = p - y * W
            # The neighbours already in, as a ring mask: each run of them round the ring is in
            # one region already, so one union per run; p itself only joins that region (a
            # record is made only for a pixel without neighbours: a new region).
            c0 = (y + 1) * W2 + x + 1
            ring = (
                added[c0 - W2 - 1] | added[c0 - W2] << 1 | added[c0 - W2 + 1] << 2
                | added[c0 + 1] << 3 | added[c0 + W2 + 1] << 4 | added[c0 + W2] << 5
                | added[c0 + W2 - 1] << 6 | added[c0 - 1] << 7
            )
            added[c0] = 1
            r = -1
            for k in range(tables[2, ring]):
                pos = tables[3 + k, ring]
                q = (y + rdy[pos]) * W + x + rdx[pos]
                rq = parent[q]
                if rq == r:
                    continue
                while parent[rq] != rq:
                    parent[rq] = parent[parent[rq]]
                    rq = parent[rq]
                if r < 0:
                    r = rq
                    continue
                if rq == r:
                    continue
                a, b = r, rq
                if size[rq] > size[r]:
                    a, b = rq, r
                parent[b] = a
                size[a] += size[b]
                bx0[a] = min(bx0[a], bx0[b])
                by0[a] = min(by0[a], by0[b])
                bx1[a] = max(bx1[a], bx1[b])
                by1[a] = max(by1[a], by1[b])
                area2[a] += area2[b]
                euler4[a] += euler4[b]
                first[a] = min(first[a], first[b])
                i = lpos[b]
                last = live[nlive - 1]
                live[i] = last
                lpos[last] = i
                lpos[b] = -1
                nlive -= 1
                r = a
            if r < 0:  # a new region
                r = p
                parent[p] = p
                size[p] = 1
                bx0[p] = x
                bx1[p] = x
                by0[p] = y
                by1[p] = y
                first[p] = p
                area2[p] = 0
                euler4[p] = 0
                live[nlive] = p
                lpos[p] = nlive
                nlive += 1
            else:
                parent[p] = r
                size[r] += 1
                bx0[r] = min(bx0[r], x)
                bx1[r] = max(bx1[r], x)
                by0[r] = min(by0[r], y)
                by1[r] = max(by1[r], y)
                first[r] = min(first[r], p)
            euler4[r] += tables[0, ring]
            e4all += tables[0, ring]
            area2[r] += tables[1, ring]
        if ki < 0 or v != keys[ki]:
            continue
        holed[ki] = 4 * nlive > e4all
        # snapshot of the regions at this level
        if multi:
            nc = 0
            for i in range(nlive):
                g = live[i]
                cb0[nc], cb1[nc] = bx0[g], by0[g]
                cb2[nc], cb3[nc] = min(bx1[g] + 1, W - 1), min(by1[g] + 1, H - 1)
                nc += 1
            best = -1.0
            for c in range(nc):
                for g in range(gt.shape[0]):
                    ix = max(0, min(cb2[c], gt[g, 2]) - max(cb0[c], gt[g, 0]) + 1)
                    iy = max(0, min(cb3[c], gt[g, 3]) - max(cb1[c], gt[g, 1]) + 1)
                    inter = ix * iy
                    den = ((cb2[c] - cb0[c] + 1) * (cb3[c] - cb1[c] + 1)
                           + (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1) - inter)
                    s = 0.0 if den <= 0 else inter / den
                    if s > best:
                        best = s
            out[ki] = best
        else:
            top = -1
            holes = 0
            for i in range(nlive):
                g = live[i]
                if euler4[g] < 4:
                    holes += 1
                if top < 0 or area2[g] > area2[top] or (
                    area2[g] == area2[top] and first[g] > first[top]
                ):
                    top = live[i]
            compete = False
            if holes > 0:
                for i in range(nlive):
                    g = live[i]
                    if g != top:
                        hi = area2[g]
                        if euler4[g] < 4:  # the outer contour lies within the centres' box
                            hi = 2 * (bx1[g] - bx0[g]) * (by1[g] - by0[g])
                        if hi >= area2[top]:
                            compete = True
                            break
            if compete:
                # The outer contour of a region with holes also encloses them: its area is
                # the window area of the filled region, computed (flood fill in its box)
                # for the regions that could compete, the top one included; the others lie
                # within their centres' box, whose area is below the top one's.
                best_a = -1
                ties = 0
                top0, lo0 = top, area2[top]
                for i in range(nlive):
                    g = live[i]
                    a2 = area2[g]
                    if euler4[g] < 4 and (
                        g == top0 or 2 * (bx1[g] - bx0[g]) * (by1[g] - by0[g]) >= lo0
                    ):
                        gx0, gy0 = bx0[g] - 1, by0[g] - 1
                        gw, gh = bx1[g] - bx0[g] + 3, by1[g] - by0[g] + 3
                        fm = np.zeros(gw * gh, np.uint8)  # 1 region, 2 reached from outside
                        for yy in range(1, gh - 1):
                            for xx in range(1, gw - 1):
                                q = (gy0 + yy) * W + gx0 + xx
                                if parent[q] >= 0:
                                    rq = q
                                    while parent[rq] != rq:
                                        parent[rq] = parent[parent[rq]]
                                        rq = parent[rq]
                                    if rq == g:
                                        fm[yy * gw + xx] = 1
                        stack = np.empty(gw * gh, np.int64)
                        stack[0] = 0
                        fm[0] = 2
                        ns = 1
                        while ns > 0:
                            ns -= 1
                            c = stack[ns]
                            cy = c // gw
                            cx = c - cy * gw
                            for k in range(4):
                                ny, nx = cy, cx
                                if k == 0:
                                    ny = cy - 1
                                elif k == 1:
                                    ny = cy + 1
                                elif k == 2:
                                    nx = cx - 1
                                else:
                                    nx = cx + 1
                                if ny < 0 or ny >= gh or nx < 0 or nx >= gw:
                                    continue
                                n = ny * gw + nx
                                if fm[n] == 0:
                                    fm[n] = 2
                                    stack[ns] = n
                                    ns += 1
                        a2 = 0
                        for yy in range(gh - 1):
                            for xx in range(gw - 1):
                                c = yy * gw + xx
                                cnt = (
                                    (fm[c] != 2) + (fm[c + 1] != 2)
                                    + (fm[c + gw] != 2) + (fm[c + gw + 1] != 2)
                                )
                                if cnt >= 3:
                                    a2 += 1 if cnt == 3 else 2
                    if a2 > best_a:
                        best_a = a2
                        top = g
                        ties = 0
                    elif a2 == best_a:
                        ties += 1
                        if first[g] > first[top]:
                            top = g
                # A tie with holes about: OpenCV's contour tree lists the top-level regions
                # last discovered first, each followed by what it encloses, so the tied region
                # with the largest first pixel wins if it is top-level (the background pass
                # below checks: the pixel above its first pixel reaches the outside); if not,
                # the exact path decides.
                undecided[ki] = ties > 0
                tiefirst[ki] = first[top]
            # without holes, every region is top-level and on a tie OpenCV lists the last
            # discovered first: the largest first pixel, as chosen above
            cb0[0], cb1[0] = bx0[top], by0[top]
            cb2[0], cb3[0] = min(bx1[top] + 1, W - 1), min(by1[top] + 1, H - 1)
            nc = 1
            best = -1.0
            for c in range(nc):
                for g in range(gt.shape[0]):
                    ix = max(0, min(cb2[c], gt[g, 2]) - max(cb0[c], gt[g, 0]) + 1)
                    iy = max(0, min(cb3[c], gt[g, 3]) - max(cb1[c], gt[g, 1]) + 1)
                    inter = ix * iy
                    den = ((cb2[c] - cb0[c] + 1) * (cb3[c] - cb1[c] + 1)
                           + (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1) - inter)
                    s = 0.0 if den <= 0 else inter / den
                    if s > best:
                        best = s
            out[ki] = best
        ki -= 1
    kend = -1  # the last level the background pass must see
    for k in range(K):
        if (multi and holed[k]) or (not multi and undecided[k]):
            kend = k
    if kend < 0:
        return
    # The background u8 < key, keys ascending, up to that level: its bounded 4-connected parts
    # are the holes (multi mode), and whether a tied region is top-level (single mode).
    # (padded coordinates: the padding is the outside, one region rooted at index 0)
    NP = (H + 2) * W2
    parent[:NP] = -1
    lpos[:NP] = -1
    for xx in range(W2):
        parent[xx] = 0
        parent[(H + 1) * W2 + xx] = 0
    for yy in range(H + 2):
        parent[yy * W2] = 0
        parent[yy * W2 + W + 1] = 0
    size[0] = NP + 1
    nlive = 0
    ki = 0
    for v in range(256):
        if ki <= kend and keys[ki] == v and not multi:
            if undecided[ki]:
                f = tiefirst[ki]
                fy = f // W
                rq = fy * W2 + f - fy * W + 1  # padded: the pixel above the first pixel
                while parent[rq] != rq:
                    parent[rq] = parent[parent[rq]]
                    rq = parent[rq]
                if rq == 0:  # top-level
                    undecided[ki] = False
            ki += 1
        elif ki <= kend and keys[ki] == v and not holed[ki]:
            ki += 1
        elif ki <= kend and keys[ki] == v:
            nc = 0
            for i in range(nlive):  # a hole's contour runs one pixel outside the hole
                g = live[i]
                cb0[nc], cb1[nc] = bx0[g] - 2, by0[g] - 2
                cb2[nc], cb3[nc] = min(bx1[g] + 1, W - 1), min(by1[g] + 1, H - 1)
                nc += 1
            best = -1.0
            for c in range(nc):
                for g in range(gt.shape[0]):
                    ix = max(0, min(cb2[c], gt[g, 2]) - max(cb0[c], gt[g, 0]) + 1)
                    iy = max(0, min(cb3[c], gt[g, 3]) - max(cb1[c], gt[g, 1]) + 1)
                    inter = ix * iy
                    den = ((cb2[c] - cb0[c] + 1) * (cb3[c] - cb1[c] + 1)
                           + (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1) - inter)
                    s = 0.0 if den <= 0 else inter / den
                    if s > best:
                        best = s
            out[ki] = max(out[ki], best)
            ki += 1
        if ki > kend:
            break
        for idx in range(start[v], start[v + 1]):
            p = order[idx]
            y = orow[idx]
            x = p - y * W
            pp = c0 = (y + 1) * W2 + x + 1
            r = -1
            for k in range(4):
                q = c0 - W2
                if k == 1:
                    q = c0 + 1
                elif k == 2:
                    q = c0 + W2
                elif k == 3:
                    q = c0 - 1
                rq = parent[q]
                if rq < 0 or rq == r:
                    continue
                while parent[rq] != rq:
                    parent[rq] = parent[parent[rq]]
                    rq = parent[rq]
                if r < 0:
                    r = rq
                    continue
                if rq == r:
                    continue
                a, b = r, rq
                if size[rq] > size[r]:
                    a, b = rq, r
                parent[b] = a
                size[a] += size[b]
                bx0[a] = min(bx0[a], bx0[b])
                by0[a] = min(by0[a], by0[b])
                bx1[a] = max(bx1[a], bx1[b])
                by1[a] = max(by1[a], by1[b])
                if lpos[b] >= 0:  # absorbed (the outside, being the largest, absorbs)
                    i = lpos[b]
                    last = live[nlive - 1]
                    live[i] = last
                    lpos[last] = i
                    lpos[b] = -1
                    nlive -= 1
                r = a
            if r < 0:  # a new part, not touching the outside (yet)
                parent[pp] = pp
                size[pp] = 1
                bx0[pp] = bx1[pp] = x + 1
                by0[pp] = by1[pp] = y + 1
                live[nlive] = pp
                lpos[pp] = nlive
                nlive += 1
            else:
                parent[pp] = r
                size[r] += 1
                bx0[r] = min(bx0[r], x + 1)
                bx1[r] = max(bx1[r], x + 1)
                by0[r] = min(by0[r], y + 1)
                by1[r] = max(by1[r], y + 1)


_KERNEL: Any = None  # the compiled kernel; False when numba is missing
_WORK = threading.local()  # per-thread work space of the kernel


def _cache_dir() -> str:
    """Where numba keeps the compiled kernel: ``$NUMBA_CACHE_DIR`` when set, else
    ``$CAMVIZ_CACHE/numba`` or ``~/.cache/camviz/numba`` (never next to the package)."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return env
    home = os.path.join(os.path.expanduser("~"), ".cache", "camviz")
    root = os.environ.get("CAMVIZ_CACHE") or home
    return os.path.join(root, "numba")


def _kernel() -> Any:
    """The one-pass kernel compiled by numba (cached on disk), or None without numba."""
    global _KERNEL
    if _KERNEL is None:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba is a dependency
            _KERNEL = False
        else:
            where = _cache_dir()
            try:  # an unwritable cache would make numba write next to the package instead
                os.makedirs(where, exist_ok=True)
                with tempfile.TemporaryFile(dir=where):
                    pass
                cache = True
            except OSError:
                cache = False
            saved = numba.config.CACHE_DIR
            numba.config.CACHE_DIR = where  # read when caching is set up, just below
            try:
                _KERNEL = numba.njit(cache=cache, nogil=True)(_curve_kernel)
            finally:
                numba.config.CACHE_DIR = saved
    return _KERNEL or None


class _Crop:
    """What :func:`_exact_boxes` needs of a map: the map and the crop of a level."""

    def __init__(self, u8: np.ndarray) -> None:
        self.u8 = u8
        self.h, self.w = u8.shape
        self.rowmax, self.colmax = u8.max(axis=1), u8.max(axis=0)

    crop = _Map.crop


def _onepass_curve(
    u8: np.ndarray, keys: np.ndarray, gt: np.ndarray, multi: bool, kernel: Any
) -> np.ndarray:
    out = np.empty(len(keys), dtype=np.float64)
    undecided = np.zeros(len(keys), dtype=np.bool_)
    h, w = u8.shape
    ws = getattr(_WORK, "ws", None)
    if ws is None or ws.shape[1] < (h + 2) * (w + 2):
        ws = _WORK.ws = np.empty((17, (h + 2) * (w + 2)), dtype=np.int32)
        _WORK.added = np.empty((h + 2) * (w + 2), dtype=np.uint8)
    if _WORK.added.shape[0] < (h + 2) * (w + 2):
        _WORK.added = np.empty((h + 2) * (w + 2), dtype=np.uint8)
    kernel(np.ascontiguousarray(u8), keys, np.ascontiguousarray(gt), multi, _TABLES,
           ws, _WORK.added, out, undecided)
    if undecided.any():
        mp = _Crop(u8)
        for j in np.flatnonzero(undecided).tolist():
            bx = _exact_boxes(mp, int(keys[j]), multi)  # type: ignore[arg-type]
            out[j] = float(_iou(bx[:, None], gt[None]).max())
    return out


def best_iou_curve(
    cam: Any,
    gt_boxes: Any,
    cam_thresholds: Sequence[float] | np.ndarray | None = None,
    multi_contour: bool = True,
    method: str = "fast",
) -> np.ndarray:
    """Best IoU between the map's boxes and any ground-truth box, at every CAM threshold.

    ``cam`` is one (H, W) map in [0, 1]; ``gt_boxes`` (m, 4) inclusive boxes in map pixels. The
    boxes at each threshold are the reference's (:func:`camviz.localize.reference_boxes`);
    ``method="naive"`` builds them one threshold at a time; ``"fast"`` (default) finds all
    thresholds' regions in one union-find pass (numba; the first call in a fresh cache compiles
    it, a few seconds); ``"numpy"`` relabels only where the regions change (vectorised, the
    fallback without numba). All give identical results.

    Example:
        >>> import numpy as np
        >>> cam = np.zeros((6, 6)); cam[1:4, 1:4] = 0.5; cam[2, 2] = 1.0
        >>> best_iou_curve(cam, [[1, 1, 3, 3]], [0.0, 0.6]).round(3).tolist()
        [0.562, 0.444]
    """
    ts = default_cam_thresholds() if cam_thresholds is None else np.asarray(cam_thresholds)
    gt = _boxes_arg(gt_boxes)
    u8 = quantise(cam)
    cuts = reference_thresholds(int(u8.max()), ts)
    if method == "naive":
        bx = _reference_boxes_u8(u8, cuts, multi_contour)
        return np.array([_iou(b[:, None], gt[None]).max() for b in bx], dtype=np.float64)
    if method not in ("fast", "numpy"):
        raise CamvizError(f"method must be 'fast', 'numpy' or 'naive', not {method!r}")
    levels = np.flatnonzero(np.bincount(u8.ravel(), minlength=256))
    pos = np.searchsorted(levels, cuts, side="right")
    empty = pos >= len(levels)
    key = levels[np.minimum(pos, len(levels) - 1)]
    res = np.empty(len(cuts), dtype=np.float64)
    if empty.any():
        res[empty] = _iou(np.zeros((1, 1, 4), np.int64), gt[None]).max()
    keys = np.unique(key[~empty])
    small = (u8.shape[0] + 2) * (u8.shape[1] + 2) < 2**31  # the kernel's int32 indices
    kernel = _kernel() if method == "fast" and small else None
    if len(keys) and kernel is not None:
        best = _onepass_curve(u8, keys.astype(np.int64), gt, bool(multi_contour), kernel)
        res[~empty] = best[np.searchsorted(keys, key[~empty])]
    elif len(keys):
        mp = _Map(u8)
        found: dict[int, float] = {}
        i = 0
        while i < len(keys):
            i += _run(mp, keys[i:], gt, multi_contour, found)
        res[~empty] = [found[int(k)] for k in key[~empty]]
    return res


# --------------------------------------------------------------------------------------------
# accumulators
# --------------------------------------------------------------------------------------------


def _maps_and_boxes(cam: Any, gt_boxes: Any) -> tuple[list[np.ndarray], list[Any]]:
    arr = _np(cam, np.float64)
    if arr.ndim == 2:
        return [arr], [gt_boxes]
    if arr.ndim == 3:
        if len(gt_boxes) != len(arr):
            raise CamvizError(f"{len(arr)} maps but {len(gt_boxes)} sets of ground-truth boxes")
        return list(arr), list(gt_boxes)
    raise CamvizError(f"cam must be (H, W) or (B, H, W); got shape {arr.shape}")


class BoxAccuracy:
    """MaxBoxAcc / MaxBoxAccV2 accumulator (the reference's ``BoxEvaluator``).

    For every image and CAM threshold it takes the best IoU between the map's boxes and the
    image's ground-truth boxes, and counts a hit at each IoU threshold (in percent) it reaches.
    ``compute()`` gives accuracy(t) = hits(t) / images * 100 per IoU threshold, MaxBoxAcc@d (the
    best over one dataset-wide t), MaxBoxAccV2 (mean over the IoU thresholds), the curves and
    the best CAM threshold for each. V1 is ``multi_contour=False`` read at 50.

    Example:
        >>> import numpy as np
        >>> acc = BoxAccuracy(multi_contour=False)
        >>> cam = np.zeros((10, 10)); cam[2:7, 3:8] = np.linspace(0.2, 1, 5)
        >>> acc.update(cam, [[3, 2, 7, 6]])
        >>> acc.compute()["MaxBoxAcc@50"], acc.count
        (100.0, 1)
    """

    def __init__(
        self,
        cam_thresholds: Sequence[float] | np.ndarray | None = None,
        iou_thresholds: Sequence[int] = (30, 50, 70),
        multi_contour: bool = True,
        method: str = "fast",
    ) -> None:
        self.cam_thresholds = (
            default_cam_thresholds() if cam_thresholds is None else np.asarray(cam_thresholds)
        )
        self.iou_thresholds = [int(d) for d in iou_thresholds]
        self.multi_contour = multi_contour
        self.method = method
        self.num_correct = {d: np.zeros(len(self.cam_thresholds)) for d in self.iou_thresholds}
        self.count = 0
        self.last: np.ndarray | None = None

    def update(self, cam: Any, gt_boxes: Any) -> None:
        """Add one map (H, W) with its boxes (m, 4), or a batch (B, H, W) with a list of them.

        Maps must be min-max normalised to [0, 1] (``res.cams(..., normalize=True)``); boxes
        are inclusive, in map pixels. The last best-IoU curves are kept in ``last`` (B, T).
        """
        maps, gts = _maps_and_boxes(cam, gt_boxes)
        curves = []
        for m, g in zip(maps, gts, strict=True):
            best = best_iou_curve(m, g, self.cam_thresholds, self.multi_contour, self.method)
            for d in self.iou_thresholds:
                self.num_correct[d][np.flatnonzero(best >= d / 100)] += 1
            self.count += 1
            curves.append(best)
        self.last = np.stack(curves)

    def compute(self) -> dict[str, Any]:
        """Metrics so far: ``MaxBoxAcc@d`` per IoU threshold d, ``MaxBoxAccV2`` (their mean),
        ``curves`` {d: accuracy per CAM threshold}, ``best_threshold`` {d: CAM threshold},
        ``count`` (images)."""
        if self.count == 0:
            raise CamvizError("no image was added: call update() before compute()")
        out: dict[str, Any] = {}
        curves, best_t = {}, {}
        for d in self.iou_thresholds:
            acc = self.num_correct[d] * 100.0 / float(self.count)
            curves[d] = acc
            out[f"MaxBoxAcc@{d}"] = float(acc.max())
            best_t[d] = float(self.cam_thresholds[int(acc.argmax())])
        out["MaxBoxAccV2"] = float(np.average([out[f"MaxBoxAcc@{d}"] for d in self.iou_thresholds]))
        out["curves"], out["best_threshold"], out["count"] = curves, best_t, self.count
        return out


class PixelAP:
    """PxAP accumulator (the reference's ``MaskEvaluator``): pixel scores are pooled over the
    dataset in histograms with right edges ``[*cam_thresholds, 1, 2, 3]``; ignore pixels count
    in neither class.

    Example:
        >>> import numpy as np
        >>> pxap = PixelAP()
        >>> cam = np.array([[0.9, 0.8], [0.1, 0.0]])
        >>> pxap.update(cam, np.array([[1, 1], [0, 0]]))
        >>> pxap.compute()["PxAP"]
        100.0
    """

    def __init__(self, cam_thresholds: Sequence[float] | np.ndarray | None = None) -> None:
        self.cam_thresholds = (
            default_cam_thresholds() if cam_thresholds is None else np.asarray(cam_thresholds)
        )
        self.edges = np.append(self.cam_thresholds, [1.0, 2.0, 3.0])
        self.true_hist = np.zeros(len(self.cam_thresholds) + 2, dtype=np.float64)
        self.false_hist = np.zeros(len(self.cam_thresholds) + 2, dtype=np.float64)
        self.count = 0

    def update(self, cam: Any, gt_mask: Any, ignore: Any = None) -> None:
        """Add one map (H, W) in [0, 1] with its ground-truth mask (H, W; foreground where
        > 0.5) and an optional ignore mask (pixels of it outside the foreground are skipped).
        Masks must already be at the map's size (nearest-neighbour resize)."""
        u = _np(cam, np.float64)
        quantise(u)  # the reference's validity check: 2-D, no NaN, within [0, 1]
        fg = _np(gt_mask) > 0.5
        if fg.shape != u.shape:
            raise CamvizError(f"mask {fg.shape} and map {u.shape} differ: resize the mask first")
        keep = np.ones_like(fg)
        if ignore is not None:
            ign = _np(ignore) > 0.5
            if ign.shape != u.shape:
                raise CamvizError(f"ignore mask {ign.shape} and map {u.shape} differ")
            keep = ~(ign & ~fg)
        self.true_hist += np.histogram(u[fg & keep], bins=self.edges)[0].astype(np.float64)
        self.false_hist += np.histogram(u[~fg & keep], bins=self.edges)[0].astype(np.float64)
        self.count += 1

    def compute(self) -> dict[str, Any]:
        """``PxAP`` (percent), ``precision``/``recall`` per threshold (high to low), ``count``."""
        n_true = self.true_hist.sum()
        tp = self.true_hist[::-1].cumsum()
        fn = n_true - tp
        fp = self.false_hist[::-1].cumsum()
        if ((tp + fn) <= 0).all():
            raise CamvizError("no ground-truth foreground pixel was added: PxAP is undefined")
        if ((tp + fp) <= 0).all():
            raise CamvizError("no positive prediction at any threshold: PxAP is undefined")
        nonzero = (tp + fp) != 0
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
            recall = tp / (tp + fn)
        auc = (precision[1:] * np.diff(recall))[nonzero[1:]].sum() * 100
        return {"PxAP": float(auc), "precision": precision, "recall": recall, "count": self.count}


class ClassicLocalization:
    """The CAM paper's localization at one fixed threshold (default 20% of the maximum).

    Per image: the reference single box of the ground-truth class's map at ``threshold``; a
    hit is IoU >= ``iou_threshold`` with any ground-truth box. GT-known loc counts hits;
    top-1 loc needs the top-1 class right too; top-5 loc needs the label in the top 5. Also
    reports top-1 / top-5 classification. All in percent.

    Example:
        >>> import numpy as np
        >>> loc = ClassicLocalization()
        >>> cam = np.zeros((8, 8)); cam[2:6, 2:6] = 1.0
        >>> loc.update(cam, [[2, 2, 6, 6]], label=3, topk=[3, 1, 0, 2, 4])
        >>> loc.compute()["top1_loc"]
        100.0
    """

    def __init__(self, threshold: float = PAPER_THRESHOLD, iou_threshold: float = 0.5) -> None:
        self.threshold = float(threshold)
        self.iou_threshold = float(iou_threshold)
        self.n = 0
        self.hits = {"gt_known_loc": 0, "top1_loc": 0, "top5_loc": 0, "top1_cls": 0, "top5_cls": 0}
        self.last_hit: bool | None = None

    def update(self, cam: Any, gt_boxes: Any, label: int, topk: Sequence[int] | Any) -> None:
        """Add one image: the map (H, W) in [0, 1] of its ground-truth class, its boxes, its
        label and its predicted classes best first. ``last_hit`` says whether the box hit."""
        best = best_iou_curve(cam, gt_boxes, [self.threshold], multi_contour=False)[0]
        top = [int(c) for c in _np(topk).ravel().tolist()]
        hit = bool(best >= self.iou_threshold)
        c1, c5 = bool(top[:1] == [int(label)]), int(label) in top[:5]
        self.hits["gt_known_loc"] += hit
        self.hits["top1_loc"] += hit and c1
        self.hits["top5_loc"] += hit and c5
        self.hits["top1_cls"] += c1
        self.hits["top5_cls"] += c5
        self.n += 1
        self.last_hit = hit

    def compute(self) -> dict[str, float]:
        """Percentages: ``gt_known_loc``, ``top1_loc``, ``top5_loc``, ``top1_cls``,
        ``top5_cls``; plus ``count``."""
        if self.n == 0:
            raise CamvizError("no image was added: call update() before compute()")
        out = {k: v * 100.0 / self.n for k, v in self.hits.items()}
        out["count"] = self.n
        return out
