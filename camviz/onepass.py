"""Best IoU at every threshold of a map in one pass over its pixels (the engine of
:func:`camviz.metrics.best_iou_curve`).

The regions of a map at nested thresholds are nested, so a union-find that adds the pixels from
the top level down meets the regions of every threshold on its way. Each region (a set of the
union-find, named by its root pixel) keeps its bounding box, its first pixel in raster order,
4 x its Euler number and 2 x the ``contourArea`` of its outer contour where it has no hole; the
last two are sums over the 2x2 windows a pixel completes, read from :data:`_TABLES`. In multi
mode a second union-find over the background, from the bottom level up, gives the hole contours
(bounded 4-connected parts). In single mode a region with holes has a larger outer contour than
its windows say: its exact area (holes filled) is computed only when it could compete for the
largest, and a tie among such regions that OpenCV's contour order would settle is left to the
exact path (:class:`camviz.localize.Contours`).

The helpers below are plain Python until :func:`compiled` hands them to numba (on first use, so
``import camviz`` does not load numba), cached on disk under ``~/.cache/camviz/numba``.

The module is long (about 650 lines) because it is one algorithm: two dozen small compiled
helpers that share one work space and one lazy compile step, which resolves them by name in
this module (numba looks a callee up in its caller's module when the caller compiles).

Example:
    >>> import numpy as np
    >>> u8 = np.zeros((6, 6), np.uint8); u8[1:4, 1:4] = 127; u8[2, 2] = 255
    >>> iou_by_level(u8, np.array([127, 255]), np.array([[1, 1, 3, 3]]), multi=False).round(3)
    array([0.562, 0.444])
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from camviz.errors import CamvizError
from camviz.files import writable_cache
from camviz.localize import Contours

__all__ = ["iou_by_level", "compiled", "cache_dir"]

_JIT: dict[str, Callable[..., Any]] = {}  # the pure-Python functions numba compiles, by name
_OWN: set[str] = set()  # those compiled as functions of their own; the others are inlined


def _jit(f: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a helper for numba: :func:`compiled` rebinds its name here to the compiled one,
    inlined where it is called (no call in the per-pixel loops)."""
    _JIT[f.__name__] = f
    return f


def _jit_own(f: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`_jit`, compiled as a function of its own: the two passes and the kernel
    (inlining large functions in numba makes the first compile much slower)."""
    _OWN.add(f.__name__)
    return _jit(f)


# --------------------------------------------------------------------------------------------
# neighbours
# --------------------------------------------------------------------------------------------

# The eight neighbours of a pixel as a ring, bit k of a ring mask: 0 top-left, 1 top, 2 top-right,
# 3 right, 4 bottom-right, 5 bottom, 6 bottom-left, 7 left. Then the four neighbours: up, right,
# down, left.
_RING_DY = (-1, -1, -1, 0, 1, 1, 1, 0)
_RING_DX = (-1, 0, 1, 1, 1, 0, -1, -1)
_DY4 = (-1, 0, 1, 0)
_DX4 = (0, 1, 0, -1)


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


@_jit
def _ring_mask(added: np.ndarray, c: int, W2: int) -> int:
    """The ring mask of the neighbours of padded pixel ``c`` already added (row stride W2)."""
    return (
        added[c - W2 - 1] | added[c - W2] << 1 | added[c - W2 + 1] << 2 | added[c + 1] << 3
        | added[c + W2 + 1] << 4 | added[c + W2] << 5 | added[c + W2 - 1] << 6
        | added[c - 1] << 7
    )


@_jit
def _ring_neighbour(y: int, x: int, pos: int, W: int) -> int:
    """Flat index of the neighbour at ring position ``pos`` of pixel (y, x), row stride W."""
    return (y + _RING_DY[pos]) * W + x + _RING_DX[pos]


@_jit
def _neighbour4(c: int, k: int, W: int) -> int:
    """Flat index of the k-th 4-neighbour (up, right, down, left) of pixel ``c``, stride W."""
    return c + _DY4[k] * W + _DX4[k]


# --------------------------------------------------------------------------------------------
# union-find with box bookkeeping, and the list of live roots
# --------------------------------------------------------------------------------------------


@_jit
def _find(parent: np.ndarray, p: int) -> int:
    """The root of p's set, halving the path on the way (``parent[p] == p`` at a root)."""
    while parent[p] != p:
        parent[p] = parent[parent[p]]
        p = parent[p]
    return p


@_jit
def _union(parent: np.ndarray, size: np.ndarray, box: np.ndarray, a: int, b: int) -> tuple:
    """Merge the sets of roots a != b: the larger one's root (a's on a tie) becomes the root
    of both and its box ``box[:, root]`` (x0, y0, x1, y1) grows to cover the other's.
    Returns (root, absorbed root)."""
    if size[b] > size[a]:
        a, b = b, a
    parent[b] = a
    size[a] += size[b]
    box[0, a] = min(box[0, a], box[0, b])
    box[1, a] = min(box[1, a], box[1, b])
    box[2, a] = max(box[2, a], box[2, b])
    box[3, a] = max(box[3, a], box[3, b])
    return a, b


@_jit
def _join(parent: np.ndarray, size: np.ndarray, box: np.ndarray, r: int, q: int) -> tuple:
    """Join the set of pixel q (already in) to the set of root r (r < 0: no set yet).
    Returns (root of both, the root absorbed or -1 when nothing was merged)."""
    rq = parent[q]
    if rq != r:  # q's parent is often r itself: no walk
        rq = _find(parent, rq)
    if r < 0:
        return rq, -1
    if rq == r:
        return r, -1
    return _union(parent, size, box, r, rq)


@_jit
def _add_pixel(
    parent: np.ndarray, size: np.ndarray, box: np.ndarray, r: int, p: int, x: int, y: int
) -> int:
    """Put pixel p at (x, y) into the set of root r, or into a new set of its own when r < 0.
    Returns its root."""
    if r < 0:
        parent[p] = p
        size[p] = 1
        box[0, p] = box[2, p] = x
        box[1, p] = box[3, p] = y
        return p
    parent[p] = r
    size[r] += 1
    box[0, r] = min(box[0, r], x)
    box[1, r] = min(box[1, r], y)
    box[2, r] = max(box[2, r], x)
    box[3, r] = max(box[3, r], y)
    return r


@_jit
def _live_add(live: np.ndarray, lpos: np.ndarray, n: int, g: int) -> int:
    """Append root g to the n live roots ``live[:n]`` (``lpos[g]``: its place). Returns n + 1."""
    live[n] = g
    lpos[g] = n
    return n + 1


@_jit
def _live_drop(live: np.ndarray, lpos: np.ndarray, n: int, g: int) -> int:
    """Remove root g from the n live roots if it is one (``lpos[g] >= 0``); returns the count."""
    i = lpos[g]
    if i < 0:
        return n
    last = live[n - 1]
    live[i] = last
    lpos[last] = i
    lpos[g] = -1
    return n - 1


# --------------------------------------------------------------------------------------------
# boxes of a level and their best IoU
# --------------------------------------------------------------------------------------------


@_jit
def _contour_box(
    cand: np.ndarray, i: int, box: np.ndarray, g: int, grow: int, W: int, H: int
) -> None:
    """Write the reference's box of the contour round set g into ``cand[:, i]``: ``grow``
    pixels beyond the set's box at the top left (0 for a region, 2 for a hole in padded
    coordinates, whose contour runs one pixel outside it), one past the end at the bottom
    right, clipped to W - 1 / H - 1."""
    cand[0, i] = box[0, g] - grow
    cand[1, i] = box[1, g] - grow
    cand[2, i] = min(box[2, g] + 1, W - 1)
    cand[3, i] = min(box[3, g] + 1, H - 1)


@_jit
def _snapshot(
    cand: np.ndarray, live: np.ndarray, n: int, box: np.ndarray, grow: int, W: int, H: int
) -> int:
    """The contour boxes of the n live sets of a level into ``cand`` (see :func:`_contour_box`).
    Returns n."""
    for i in range(n):
        _contour_box(cand, i, box, live[i], grow, W, H)
    return n


@_jit
def _best_iou(cand: np.ndarray, n: int, gt: np.ndarray) -> float:
    """The best IoU of the n boxes ``cand[:, :n]`` (rows x0, y0, x1, y1) with any ground-truth
    box (rows of gt): inclusive boxes, a non-positive union gives 0 (:func:`box_iou`'s
    arithmetic). -1 when there is no box."""
    best = -1.0
    for c in range(n):
        x0, y0, x1, y1 = cand[0, c], cand[1, c], cand[2, c], cand[3, c]
        area = (x1 - x0 + 1) * (y1 - y0 + 1)
        for g in range(gt.shape[0]):
            ix = max(0, min(x1, gt[g, 2]) - max(x0, gt[g, 0]) + 1)
            iy = max(0, min(y1, gt[g, 3]) - max(y0, gt[g, 1]) + 1)
            inter = ix * iy
            den = area + (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1) - inter
            s = 0.0 if den <= 0 else inter / den
            if s > best:
                best = s
    return best


# --------------------------------------------------------------------------------------------
# single mode: the region with the largest outer contour
# --------------------------------------------------------------------------------------------


@_jit
def _fill_outside(fm: np.ndarray, gw: int, gh: int) -> None:
    """Mark 2 every cell of the gw x gh grid ``fm`` that is 0 and 4-connected to its corner
    cell (0, itself 0): the outside of the region (1) in it, holes excluded."""
    stack = np.empty(gw * gh, np.int64)
    stack[0] = 0
    fm[0] = 2
    ns = 1
    while ns > 0:
        ns -= 1
        cy, cx = divmod(stack[ns], gw)
        for k in range(4):
            ny, nx = cy + _DY4[k], cx + _DX4[k]
            if 0 <= ny < gh and 0 <= nx < gw and fm[ny * gw + nx] == 0:
                fm[ny * gw + nx] = 2
                stack[ns] = ny * gw + nx
                ns += 1


@_jit
def _filled_area2(parent: np.ndarray, box: np.ndarray, g: int, W: int) -> int:
    """2 x the ``contourArea`` of the outer contour of region g, holes included: the window
    area of the region with its holes filled (a flood fill of the outside in its box)."""
    x0, y0 = box[0, g] - 1, box[1, g] - 1  # a one-pixel margin all round
    gw, gh = box[2, g] - box[0, g] + 3, box[3, g] - box[1, g] + 3
    fm = np.zeros(gw * gh, np.uint8)  # 1 region, 2 reached from outside
    for yy in range(1, gh - 1):
        for xx in range(1, gw - 1):
            q = (y0 + yy) * W + x0 + xx
            if parent[q] >= 0 and _find(parent, q) == g:
                fm[yy * gw + xx] = 1
    _fill_outside(fm, gw, gh)
    a2 = 0
    for yy in range(gh - 1):
        for xx in range(gw - 1):
            c = yy * gw + xx
            cnt = (fm[c] != 2) + (fm[c + 1] != 2) + (fm[c + gw] != 2) + (fm[c + gw + 1] != 2)
            if cnt >= 3:
                a2 += 1 if cnt == 3 else 2
    return a2


@_jit
def _area2_bound(box: np.ndarray, area2: np.ndarray, euler4: np.ndarray, g: int) -> int:
    """An upper bound of 2 x region g's outer contour area: its window area without holes,
    else the area of its pixel centres' box (the outer contour lies within it)."""
    if euler4[g] >= 4:  # Euler number 1: no hole
        return area2[g]
    return 2 * (box[2, g] - box[0, g]) * (box[3, g] - box[1, g])


@_jit
def _largest_by_windows(live: np.ndarray, n: int, area2: np.ndarray, first: np.ndarray) -> int:
    """The live region with the largest window area; on a tie the one whose first pixel comes
    last (without holes all regions are top-level, and OpenCV lists the last found first)."""
    top = live[0]
    for i in range(1, n):
        g = live[i]
        if area2[g] > area2[top] or (area2[g] == area2[top] and first[g] > first[top]):
            top = g
    return top


@_jit
def _could_compete(
    live: np.ndarray, n: int, box: np.ndarray, area2: np.ndarray, euler4: np.ndarray, top: int
) -> bool:
    """Whether a region has holes and some region other than ``top`` could have an outer
    contour at least as large as top's window area says."""
    for i in range(n):
        if euler4[live[i]] < 4:  # a region with holes
            break
    else:
        return False
    for i in range(n):
        g = live[i]
        if g != top and _area2_bound(box, area2, euler4, g) >= area2[top]:
            return True
    return False


@_jit
def _largest_filled(
    live: np.ndarray, n: int, box: np.ndarray, area2: np.ndarray, euler4: np.ndarray,
    first: np.ndarray, parent: np.ndarray, top: int, W: int,
) -> tuple:
    """The region with the largest outer contour, holes filled where they could matter (the
    window winner ``top`` and every region with holes whose bound reaches it). Returns (winner,
    whether it ties with another: OpenCV's contour order must settle that)."""
    lo = area2[top]
    best, ties, win = -1, 0, top
    for i in range(n):
        g = live[i]
        a2 = area2[g]
        if euler4[g] < 4 and (g == top or _area2_bound(box, area2, euler4, g) >= lo):
            a2 = _filled_area2(parent, box, g, W)
        if a2 > best:
            best, ties, win = a2, 0, g
        elif a2 == best:
            ties += 1
            if first[g] > first[win]:
                win = g
    return win, ties > 0


@_jit
def _single_winner(
    live: np.ndarray, n: int, box: np.ndarray, area2: np.ndarray, euler4: np.ndarray,
    first: np.ndarray, parent: np.ndarray, W: int,
) -> tuple:
    """The region single mode keeps at a level: the largest outer contour, and whether a tie
    with holes about is left for OpenCV's contour order (a region with holes can only win
    through its filled area, computed when it could compete)."""
    top = _largest_by_windows(live, n, area2, first)
    if not _could_compete(live, n, box, area2, euler4, top):
        return top, False
    return _largest_filled(live, n, box, area2, euler4, first, parent, top, W)


# --------------------------------------------------------------------------------------------
# the two passes
# --------------------------------------------------------------------------------------------


@_jit
def _sort_pixels(u8: np.ndarray, order: np.ndarray, orow: np.ndarray) -> np.ndarray:
    """Counting sort of the pixels (flat indices) by level, raster order within a level, into
    ``order``, their rows into ``orow`` (no division in the passes). Returns ``start``: level
    v's pixels are ``order[start[v]:start[v + 1]]``."""
    H, W = u8.shape
    flat = u8.ravel()
    start = np.zeros(257, np.int64)
    for p in range(H * W):
        start[flat[p] + 1] += 1
    for v in range(256):
        start[v + 1] += start[v]
    fill = start[:256].copy()
    for y in range(H):
        for p in range(y * W, y * W + W):
            v = flat[p]
            order[fill[v]] = p
            orow[fill[v]] = y
            fill[v] += 1
    return start


@_jit_own
def _foreground_pass(
    H: int, W: int, keys: np.ndarray, gt: np.ndarray, multi: bool, tables: np.ndarray,
    ws: np.ndarray, added: np.ndarray, start: np.ndarray, out: np.ndarray,
    undecided: np.ndarray, holed: np.ndarray, tiefirst: np.ndarray,
) -> None:
    """Add the pixels from level 255 down to keys[0] to an 8-connected union-find; at each key
    write the best IoU of its regions (single mode: of the largest) into ``out``, whether the
    foreground has holes into ``holed``, and in single mode whether the contour order must
    settle a tie into ``undecided`` (with the winner's first pixel in ``tiefirst``)."""
    W2 = W + 2
    order, parent, size, live, lpos = ws[0], ws[1], ws[2], ws[3], ws[4]
    box, area2, euler4, first, cand, orow = ws[5:9], ws[9], ws[10], ws[11], ws[12:16], ws[16]
    parent[: H * W] = -1
    added[:] = 0
    nlive, ki, e4all = 0, keys.shape[0] - 1, 0  # e4all: 4 x (regions - holes) of everything
    for v in range(255, keys[0] - 1, -1):
        for idx in range(start[v], start[v + 1]):
            p, y = order[idx], orow[idx]
            x = p - y * W
            # each run of neighbours round the ring is in one region already: one join per run
            c = (y + 1) * W2 + x + 1
            ring = _ring_mask(added, c, W2)
            added[c] = 1
            r = -1
            for k in range(tables[2, ring]):
                q = _ring_neighbour(y, x, tables[3 + k, ring], W)
                r, b = _join(parent, size, box, r, q)
                if b >= 0:
                    area2[r] += area2[b]
                    euler4[r] += euler4[b]
                    first[r] = min(first[r], first[b])
                    nlive = _live_drop(live, lpos, nlive, b)
            if r < 0:
                r = _add_pixel(parent, size, box, r, p, x, y)
                first[r], area2[r], euler4[r] = p, 0, 0
                nlive = _live_add(live, lpos, nlive, r)
            else:
                _add_pixel(parent, size, box, r, p, x, y)
                first[r] = min(first[r], p)
            euler4[r] += tables[0, ring]
            e4all += tables[0, ring]
            area2[r] += tables[1, ring]
        if ki < 0 or v != keys[ki]:
            continue
        holed[ki] = 4 * nlive > e4all
        if multi:
            out[ki] = _best_iou(cand, _snapshot(cand, live, nlive, box, 0, W, H), gt)
        else:
            top, undecided[ki] = _single_winner(live, nlive, box, area2, euler4, first, parent, W)
            tiefirst[ki] = first[top]
            _contour_box(cand, 0, box, top, 0, W, H)
            out[ki] = _best_iou(cand, 1, gt)
        ki -= 1


@_jit
def _init_outside(parent: np.ndarray, size: np.ndarray, lpos: np.ndarray, H: int, W: int) -> None:
    """Background union-find in padded coordinates: the padding is the outside, one set rooted
    at 0 (large enough to absorb every part it meets and never live); nothing else is in."""
    W2, NP = W + 2, (H + 2) * (W + 2)
    parent[:NP] = -1
    lpos[:NP] = -1
    for xx in range(W2):
        parent[xx] = parent[(H + 1) * W2 + xx] = 0
    for yy in range(H + 2):
        parent[yy * W2] = parent[yy * W2 + W + 1] = 0
    size[0] = NP + 1


@_jit
def _is_top_level(parent: np.ndarray, f: int, W: int) -> bool:
    """Whether the region whose first pixel is f is top-level: the background pixel above f
    reaches the outside (background union-find, padded coordinates)."""
    fy, fx = divmod(f, W)
    return _find(parent, fy * (W + 2) + fx + 1) == 0  # padded (fy - 1 + 1, fx + 1)


@_jit_own
def _background_pass(
    H: int, W: int, keys: np.ndarray, kend: int, gt: np.ndarray, multi: bool, ws: np.ndarray,
    start: np.ndarray, out: np.ndarray, undecided: np.ndarray, holed: np.ndarray,
    tiefirst: np.ndarray,
) -> None:
    """Add the background ``u8 < key`` to a 4-connected union-find, keys ascending up to
    keys[kend]: its bounded parts are the holes. Multi mode: at each key with holes, raise
    ``out`` to the best IoU of the hole contours. Single mode: clear ``undecided`` where the
    tied winner is top-level (OpenCV lists it first)."""
    W2 = W + 2
    order, parent, size, live, lpos = ws[0], ws[1], ws[2], ws[3], ws[4]
    box, cand, orow = ws[5:9], ws[12:16], ws[16]
    _init_outside(parent, size, lpos, H, W)
    nlive, ki = 0, 0
    for v in range(256):
        if ki <= kend and keys[ki] == v:
            if multi:
                if holed[ki]:
                    n = _snapshot(cand, live, nlive, box, 2, W, H)
                    out[ki] = max(out[ki], _best_iou(cand, n, gt))
            elif undecided[ki] and _is_top_level(parent, tiefirst[ki], W):
                undecided[ki] = False
            ki += 1
        if ki > kend:
            break
        for idx in range(start[v], start[v + 1]):
            p, y = order[idx], orow[idx]
            x = p - y * W
            pp = (y + 1) * W2 + x + 1
            r = -1
            for k in range(4):
                q = _neighbour4(pp, k, W2)
                if parent[q] >= 0:
                    r, b = _join(parent, size, box, r, q)
                    if b >= 0:
                        nlive = _live_drop(live, lpos, nlive, b)
            if r < 0:  # a new part, not touching the outside (yet)
                nlive = _live_add(live, lpos, nlive, pp)
            _add_pixel(parent, size, box, r, pp, x + 1, y + 1)


@_jit_own
def _curve_kernel(
    u8: np.ndarray, keys: np.ndarray, gt: np.ndarray, multi: bool, tables: np.ndarray,
    ws: np.ndarray, added: np.ndarray, out: np.ndarray, undecided: np.ndarray,
) -> None:
    """Best IoU at every key level (foreground ``u8 >= key``; keys ascending, each with some
    foreground) into ``out``; ``undecided`` marks the levels left to the exact path. ``ws``
    (17, (H + 2) (W + 2)) int32 and ``added`` ((H + 2) (W + 2)) uint8 are work space."""
    H, W = u8.shape
    K = keys.shape[0]
    start = _sort_pixels(u8, ws[0], ws[16])
    holed = np.zeros(K, np.bool_)
    tiefirst = np.zeros(K, np.int64)
    _foreground_pass(H, W, keys, gt, multi, tables, ws, added, start, out, undecided, holed,
                     tiefirst)
    kend = -1  # the last level the background pass must see
    for k in range(K):
        if (multi and holed[k]) or (not multi and undecided[k]):
            kend = k
    if kend >= 0:
        _background_pass(H, W, keys, kend, gt, multi, ws, start, out, undecided, holed,
                         tiefirst)


# --------------------------------------------------------------------------------------------
# compiling, work space, the exact path
# --------------------------------------------------------------------------------------------

_KERNEL: Any = None  # the compiled kernel
_LOCK = threading.Lock()
_WORK = threading.local()  # per-thread work space of the kernel


def cache_dir() -> str:
    """Where numba keeps the compiled pass: ``$NUMBA_CACHE_DIR`` when set, else
    ``$CAMVIZ_CACHE/numba`` or ``~/.cache/camviz/numba`` (never next to the package).

    Example:
        >>> cache_dir().endswith("numba")
        True
    """
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return env
    home = os.path.join(os.path.expanduser("~"), ".cache", "camviz")
    root = os.environ.get("CAMVIZ_CACHE") or home
    return os.path.join(root, "numba")


def compiled() -> Callable[..., None]:
    """The one-pass kernel compiled by numba (cached on disk, see :func:`cache_dir`; the first
    call in a fresh cache compiles it, a few seconds). Raises :class:`CamvizError` without
    numba.

    Example:
        >>> callable(compiled())
        True
    """
    global _KERNEL
    with _LOCK:
        if _KERNEL is None:
            try:
                import numba
            except ImportError as err:
                raise CamvizError(
                    "the box metrics need numba: pip install numba "
                    "(or pass method='naive' to best_iou_curve, about 50x slower)"
                ) from err
            where = cache_dir()
            # an unwritable cache would make numba write next to the package instead
            cache = writable_cache(where, "compiled kernel (numba)") is not None
            saved = numba.config.CACHE_DIR
            numba.config.CACHE_DIR = where  # read when caching is set up, just below
            try:
                for name, f in _JIT.items():  # callees resolve by name when the kernel compiles
                    inline = "never" if name in _OWN else "always"
                    globals()[name] = numba.njit(cache=cache, nogil=True, inline=inline)(f)
            finally:
                numba.config.CACHE_DIR = saved
            _KERNEL = globals()["_curve_kernel"]
    return _KERNEL


def _work_space(n: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's work space for maps of n padded pixels (kept: no fresh pages per map)."""
    ws = getattr(_WORK, "ws", None)
    if ws is None or ws.shape[1] < n:
        _WORK.ws = np.empty((17, n), dtype=np.int32)
        _WORK.added = np.empty(n, dtype=np.uint8)
    return _WORK.ws, _WORK.added


def iou_by_level(
    u8: np.ndarray, keys: np.ndarray, gt: np.ndarray, multi: bool, kernel: Any = None
) -> np.ndarray:
    """Best IoU between the reference's boxes of ``u8 >= key`` and any ground-truth box (m, 4),
    for every key (ascending levels of the quantised map ``u8``, each with some foreground).

    Levels the kernel leaves undecided take the exact path (:class:`Contours`). ``kernel``
    replaces the compiled one (for tests).

    Example:
        >>> u8 = np.array([[0, 200, 0, 100, 100]], np.uint8)
        >>> iou_by_level(u8, np.array([100, 200]), np.array([[3, 0, 4, 0]]), multi=True)
        array([1., 0.])
    """
    kernel = compiled() if kernel is None else kernel
    h, w = u8.shape
    out = np.empty(len(keys), dtype=np.float64)
    undecided = np.zeros(len(keys), dtype=np.bool_)
    ws, added = _work_space((h + 2) * (w + 2))
    kernel(np.ascontiguousarray(u8), np.asarray(keys, np.int64), np.ascontiguousarray(gt),
           bool(multi), _TABLES, ws, added[: (h + 2) * (w + 2)], out, undecided)
    best_iou = _JIT["_best_iou"]  # plain Python: a few boxes
    for j in np.flatnonzero(undecided).tolist():
        c = Contours(u8 >= keys[j])
        cand = np.ascontiguousarray((c.multi() if multi else c.single()).T)
        out[j] = best_iou(cand, cand.shape[1], gt)
    return out
