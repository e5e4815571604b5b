"""Masks, connected regions and boxes from class activation maps.

Two families live here:

* camviz's own helpers (:func:`mask`, :func:`regions`, :func:`boxes`, :func:`paper_box`):
  a pixel is foreground when its value is *strictly greater* than ``threshold * max`` of its
  map, regions are 8-connected (scikit-image), and boxes are inclusive pixel boxes
  ``(x0, y0, x1, y1)`` — the last pixel is inside the box. They accept numpy arrays and torch
  tensors, single maps ``(H, W)`` and batches ``(B, H, W)``.
* :func:`reference_boxes`: the box extraction of the WSOL reference evaluation
  (clovaai/wsolevaluation, ``compute_bboxes_from_scoremaps``) reproduced without OpenCV,
  quirks included (uint8 quantisation, contour-area choice, hole contours, one-past-the-end
  ``x1``/``y1``). The metrics in :mod:`camviz.metrics` are built on it so that their numbers
  equal the reference's.

Example:
    >>> import numpy as np
    >>> cam = np.zeros((4, 6)); cam[1:3, 2:5] = 1.0
    >>> boxes(cam, 0.2).tolist()
    [[2, 1, 4, 2]]
    >>> reference_boxes(cam, [0.2])[0].tolist()
    [[2, 1, 5, 3]]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from skimage.measure import label as _sk_label

from camviz.errors import CamvizError
from camviz.maps import min_max_np

__all__ = [
    "InvalidMap",
    "mask",
    "regions",
    "boxes",
    "paper_box",
    "paper_boxes",
    "reference_boxes",
    "quantise",
    "reference_thresholds",
    "reference_boxes_u8",
    "Contours",
    "PAPER_THRESHOLD",
]

#: The CAM paper's box threshold: 20% of the map's maximum.
PAPER_THRESHOLD = 0.2

_EIGHT = np.ones((3, 3), dtype=bool)
_FOUR = ndimage.generate_binary_structure(2, 1)

Array = Any  # numpy array or torch tensor


class InvalidMap(CamvizError, ValueError):
    """A score map that cannot be localised: NaN values, wrong shape, or values outside [0, 1]."""


# --------------------------------------------------------------------------------------------
# camviz helpers: masks, regions, inclusive boxes
# --------------------------------------------------------------------------------------------


def mask(cam: Array, threshold: float = PAPER_THRESHOLD) -> Array:
    """Foreground mask of each map: ``cam > threshold * max(cam)`` (per map, strictly greater).

    Works on numpy arrays and torch tensors (the tensor stays on its device), for a single
    map ``(H, W)`` or any batch ``(..., H, W)``. NaN pixels are never foreground.

    Example:
        >>> import torch
        >>> mask(torch.tensor([[0.0, 0.5], [0.1, 1.0]]), 0.2).tolist()
        [[False, True], [False, True]]
    """
    if isinstance(cam, torch.Tensor):
        top = cam.flatten(-2).nan_to_num(nan=-torch.inf).amax(-1)[..., None, None]
        return cam > threshold * top
    cam = np.asarray(cam)
    if cam.ndim < 2:
        raise InvalidMap(f"a map must be (H, W) or (..., H, W); got shape {cam.shape}")
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN map: nothing is foreground
        top = np.nanmax(cam.reshape(*cam.shape[:-2], -1), axis=-1)[..., None, None]
        return cam > threshold * top


def _np2d(x: Array, what: str = "mask") -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise InvalidMap(f"expected one {what} of shape (H, W); got shape {x.shape}")
    return x


def regions(fg: Array) -> np.ndarray:
    """Label the 8-connected regions of a boolean mask (H, W): 0 is background, 1..n regions.

    Labels follow raster order of each region's first pixel (scikit-image). Returns numpy.

    Example:
        >>> import numpy as np
        >>> regions(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]], bool)).tolist()
        [[1, 0, 0], [0, 1, 0], [0, 0, 0], [2, 0, 0]]
    """
    fg = _np2d(fg).astype(bool)
    return _sk_label(fg, connectivity=2).astype(np.int32)


def _label_boxes(lab: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, 4), dtype=np.int64)
    for i, sl in enumerate(ndimage.find_objects(lab, max_label=n)):
        if sl is None:  # pragma: no cover - labels are contiguous
            continue
        ys, xs = sl
        out[i] = (xs.start, ys.start, xs.stop - 1, ys.stop - 1)
    return out


def _boxes_2d(fg: np.ndarray, mode: str) -> np.ndarray:
    lab = _sk_label(fg, connectivity=2)
    n = int(lab.max())
    if n == 0:
        return np.zeros((0, 4), dtype=np.int64)
    bb = _label_boxes(lab, n)
    if mode == "all":
        return bb
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    return bb[[int(np.argmax(sizes))]]  # first of the largest, in raster order


def boxes(cam: Array, threshold: float = PAPER_THRESHOLD, mode: str = "largest") -> Array:
    """Inclusive boxes ``(x0, y0, x1, y1)`` of the regions above ``threshold * max`` of a map.

    ``mode="largest"``: the 8-connected region with the most pixels (ties: the first in raster
    order), ``(1, 4)`` — or ``(0, 4)`` when nothing is above the threshold.
    ``mode="all"``: one box per region, ``(n, 4)``, regions in raster order.
    A single map ``(H, W)`` gives one int64 array (or a long tensor on the map's device); a
    batch ``(B, H, W)`` gives a list of them.

    Example:
        >>> import numpy as np
        >>> cam = np.array([[0.9, 0, 0, 0], [0, 0, 0.5, 0.6], [0, 0, 1.0, 0]])
        >>> boxes(cam, 0.2, mode="all").tolist()
        [[0, 0, 0, 0], [2, 1, 3, 2]]
        >>> boxes(cam, 0.2).tolist()
        [[2, 1, 3, 2]]
    """
    if mode not in ("largest", "all"):
        raise CamvizError(f"mode must be 'largest' or 'all', not {mode!r}")
    is_t = isinstance(cam, torch.Tensor)
    fg = mask(cam, threshold)
    dev = fg.device if is_t else None
    fg_np = fg.detach().cpu().numpy() if is_t else fg
    if fg_np.ndim == 2:
        out = _boxes_2d(fg_np, mode)
        return torch.from_numpy(out).to(dev) if is_t else out
    if fg_np.ndim != 3:
        raise InvalidMap(f"boxes() takes (H, W) or (B, H, W); got shape {tuple(fg_np.shape)}")
    res = [_boxes_2d(f, mode) for f in fg_np]
    return [torch.from_numpy(r).to(dev) for r in res] if is_t else res


def paper_box(cam: Array, threshold: float = PAPER_THRESHOLD) -> Array:
    """The CAM paper's box: min-max normalise, keep pixels above 20% of the maximum, box the
    largest 8-connected region (most pixels). Inclusive ``(x0, y0, x1, y1)``.

    Any batch shape works: a map ``(H, W)`` gives ``(4,)``, maps ``(..., H, W)`` give
    ``(..., 4)``. A map with nothing above the threshold (a constant map) gives
    ``(0, 0, 0, 0)``. Tensors in, a long tensor on the same device out.

    Example:
        >>> import numpy as np
        >>> cam = np.zeros((5, 5)); cam[1:4, 2] = 3.0; cam[0, 0] = 2.0
        >>> paper_box(cam).tolist()
        [2, 1, 2, 3]
    """
    is_t = isinstance(cam, torch.Tensor)
    arr = cam.detach().float().cpu().numpy() if is_t else np.asarray(cam)
    if arr.ndim < 2:
        raise InvalidMap(f"paper_box() takes (..., H, W) maps; got shape {arr.shape}")
    lead = arr.shape[:-2]
    maps = min_max_np(arr.reshape(-1, *arr.shape[-2:]))
    out = np.zeros((maps.shape[0], 4), dtype=np.int64)
    for i, m in enumerate(maps):
        b = _boxes_2d(m > threshold * m.max(), "largest")
        if len(b):
            out[i] = b[0]
    out = out.reshape(*lead, 4)
    return torch.from_numpy(out).to(cam.device) if is_t else out


#: Alias of :func:`paper_box` for batches (``camviz run`` records these).
paper_boxes = paper_box


# --------------------------------------------------------------------------------------------
# The WSOL reference's box extraction (OpenCV findContours semantics, without OpenCV)
# --------------------------------------------------------------------------------------------


def quantise(cam: Array) -> np.ndarray:
    """The reference's uint8 quantisation of a [0, 1] map: ``trunc(cam * 255)`` in float64.

    Raises :class:`InvalidMap` (a ``ValueError``) for NaN, values outside [0, 1], or a shape
    other than (H, W), as the reference does.

    Example:
        >>> quantise(np.array([[0.5, 1.0, 0.0039]])).tolist()
        [[127, 255, 0]]
    """
    cam = _np2d(cam, "score map").astype(np.float64, copy=False)
    if np.isnan(cam).any():
        raise InvalidMap(
            "the score map contains NaN; min-max normalise it first "
            "(camviz.result.min_max turns a NaN map into zeros, as the reference does)"
        )
    if cam.size and (cam.min() < 0 or cam.max() > 1):
        raise InvalidMap(
            f"the score map must lie in [0, 1] (min {cam.min():.4g}, max {cam.max():.4g}); "
            "min-max normalise it first"
        )
    return (cam * 255).astype(np.uint8)


def reference_thresholds(u8max: int, cam_thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    """The integer cut of each CAM threshold: ``int(t * max(u8))``, foreground is ``u8 > cut``.

    Example:
        >>> reference_thresholds(255, [0.0, 0.2, 0.6]).tolist()
        [0, 51, 153]
    """
    t = np.atleast_1d(np.asarray(cam_thresholds, dtype=np.float64))  # a lone float: one cut
    return (t * np.float64(u8max)).astype(np.int64)


def _window_area(fg: np.ndarray) -> float:
    """OpenCV contourArea of the outer contour of a hole-free 8-connected set: one per 2x2
    window fully inside, one half per window with exactly three pixels inside."""
    f = fg.astype(np.int8)
    s = f[:-1, :-1] + f[:-1, 1:] + f[1:, :-1] + f[1:, 1:]
    return float(np.count_nonzero(s == 4)) + 0.5 * float(np.count_nonzero(s == 3))


class Contours:
    """Outer and hole contours of a binary image as OpenCV's ``findContours(RETR_TREE)`` sees
    them, without OpenCV: the reference's box rules for one foreground mask.

    Outer contours: one per 8-connected foreground region. Hole contours: one per bounded
    4-connected background region (not reaching the image border). Boxes follow
    ``cv2.boundingRect`` + the reference's clipping (``x1``/``y1`` one past the last pixel,
    clipped to ``W - 1``/``H - 1``); areas follow ``cv2.contourArea`` of the outer contour (a
    polygon through the centres of the boundary pixels).

    Example:
        >>> import numpy as np
        >>> fg = np.zeros((5, 7), bool); fg[0:3, 0:3] = True; fg[1, 1] = False; fg[4, 4:7] = True
        >>> c = Contours(fg)
        >>> c.n, c.single().tolist(), sorted(c.multi().tolist())
        (2, [[0, 0, 3, 3]], [[0, 0, 3, 3], [0, 0, 3, 3], [4, 4, 6, 4]])
    """

    def __init__(self, fg: np.ndarray) -> None:
        self.fg = fg
        self.h, self.w = fg.shape
        #: 8-connected labels of the foreground and their count
        self.lab, self.n = ndimage.label(fg, structure=_EIGHT)
        bg = np.pad(~fg, 1, constant_values=True)
        self._blab, bn = ndimage.label(bg, structure=_FOUR)
        self._outer_bg = self._blab[0, 0]
        self._hole_ids = [i for i in range(1, bn + 1) if i != self._outer_bg]

    def single(self) -> np.ndarray:
        """The reference's single box, (1, 4): the outer contour of largest area, the first in
        OpenCV's order on a tie."""
        areas = self._outer_areas()
        best = np.flatnonzero(areas == areas.max())
        if len(best) > 1:
            best = best[np.argsort(self._tree_order()[best], kind="stable")]
        return self._clip(self._outer_rects()[best[:1]])

    def multi(self) -> np.ndarray:
        """The reference's multi-contour boxes, (n, 4): every outer contour, then every hole."""
        return self._clip(np.concatenate([self._outer_rects(), self._hole_rects()]))

    # raw bounding rectangles (x, y, x + w, y + h), before clipping
    def _outer_rects(self) -> np.ndarray:
        out = np.zeros((self.n, 4), dtype=np.int64)
        for i, sl in enumerate(ndimage.find_objects(self.lab, max_label=self.n)):
            ys, xs = sl
            out[i] = (xs.start, ys.start, xs.stop, ys.stop)
        return out

    def _hole_rects(self) -> np.ndarray:
        if not self._hole_ids:
            return np.zeros((0, 4), dtype=np.int64)
        objs = ndimage.find_objects(self._blab)
        out = np.zeros((len(self._hole_ids), 4), dtype=np.int64)
        for j, i in enumerate(self._hole_ids):
            ys, xs = objs[i - 1]
            # padded coordinates: hole pixels x in [xs.start-1, xs.stop-2]; the traced border
            # runs one pixel outside the hole on every side.
            out[j] = (xs.start - 2, ys.start - 2, xs.stop, ys.stop)
        return out

    def _clip(self, rects: np.ndarray) -> np.ndarray:
        rects = rects.copy()
        rects[:, 2] = np.minimum(rects[:, 2], self.w - 1)
        rects[:, 3] = np.minimum(rects[:, 3], self.h - 1)
        return rects

    def _outer_areas(self) -> np.ndarray:
        lab, n = self.lab, self.n
        a, b, c, d = lab[:-1, :-1], lab[:-1, 1:], lab[1:, :-1], lab[1:, 1:]
        s = (a > 0).astype(np.int8) + (b > 0) + (c > 0) + (d > 0)
        wl = np.maximum(np.maximum(a, b), np.maximum(c, d))
        wt = (s == 4) + 0.5 * (s == 3)
        areas = np.bincount(wl.ravel(), weights=wt.ravel(), minlength=n + 1)[1:]
        if self._hole_ids:  # regions with holes: the outer contour encloses the holes
            objs = ndimage.find_objects(lab, max_label=n)
            for r in set(self._hole_parents().tolist()):
                sl = objs[r - 1]
                filled = ndimage.binary_fill_holes(np.pad(lab[sl] == r, 1), structure=_FOUR)
                areas[r - 1] = _window_area(filled)
        return areas

    def _first_pixels(self, lab: np.ndarray, ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        vals, idx = np.unique(lab.ravel(), return_index=True)
        first = dict(zip(vals.tolist(), idx.tolist(), strict=True))
        return {int(i): divmod(first[int(i)], lab.shape[1]) for i in ids}

    def _hole_parents(self) -> np.ndarray:
        """Region label enclosing each hole (the pixel above the hole's first pixel)."""
        first = self._first_pixels(self._blab, self._hole_ids)
        par = []
        for i in self._hole_ids:
            y, x = first[i]
            par.append(int(self.lab[y - 2, x - 1]))  # padded (y-1, x) -> unpadded (y-2, x-1)
        return np.asarray(par, dtype=np.int64)

    def _tree_order(self) -> np.ndarray:
        """Position of each region's outer contour in OpenCV's RETR_TREE output list:
        depth-first, children (and top-level regions) in reverse order of discovery."""
        n = self.n
        rfirst = self._first_pixels(self.lab, list(range(1, n + 1)))
        children: dict[tuple[str, int], list[tuple[int, tuple[str, int]]]] = {}
        hfirst = self._first_pixels(self._blab, self._hole_ids) if self._hole_ids else {}
        hpar = self._hole_parents() if self._hole_ids else np.zeros(0, np.int64)
        for j, hid in enumerate(self._hole_ids):
            y, x = hfirst[hid]
            key = (y - 1) * (self.w + 1) + (x - 2)  # discovered at the pixel left of the hole
            children.setdefault(("r", int(hpar[j])), []).append((key, ("h", hid)))
        for r in range(1, n + 1):
            y, x = rfirst[r]
            above = int(self._blab[y, x + 1])  # padded (y+1-1, x+1): the pixel above
            parent = ("root", 0) if above == self._outer_bg else ("h", above)
            children.setdefault(parent, []).append((y * (self.w + 1) + x, ("r", r)))
        pos = np.zeros(n, dtype=np.int64)
        counter = 0
        stack = [("root", 0)]
        # iterative pre-order DFS; children visited in reverse discovery order
        order: list[tuple[str, int]] = []
        while stack:
            node = stack.pop()
            order.append(node)
            kids = sorted(children.get(node, []))  # ascending discovery
            stack.extend(k for _, k in kids)  # last discovered is popped first
        for node in order:
            if node[0] == "r":
                pos[node[1] - 1] = counter
            if node[0] != "root":
                counter += 1
        return pos


def reference_boxes_u8(
    u8: np.ndarray, cuts: Sequence[int] | np.ndarray, multi_contour: bool = False
) -> list[np.ndarray]:
    """:func:`reference_boxes` of a map already quantised (:func:`quantise`), at integer cuts
    (:func:`reference_thresholds`): foreground is ``u8 > cut``. One (n, 4) array per cut; a
    cut at or above the map's maximum gives ``(0, 0, 0, 0)``.

    Example:
        >>> u8 = np.array([[0, 10, 10], [0, 0, 20]], np.uint8)
        >>> [b.tolist() for b in reference_boxes_u8(u8, [0, 10, 20])]
        [[[1, 0, 2, 1]], [[2, 1, 2, 1]], [[0, 0, 0, 0]]]
    """
    out: list[np.ndarray] = []
    cache: dict[int, np.ndarray] = {}
    levels = np.unique(u8)
    for cut in np.asarray(cuts, dtype=np.int64).tolist():
        # foreground u8 > cut only changes at levels present in the map
        key = int(levels[np.searchsorted(levels, cut, side="right")]) if cut < levels[-1] else -1
        if key not in cache:
            if key < 0:
                cache[key] = np.zeros((1, 4), dtype=np.int64)
            else:
                c = Contours(u8 > cut)
                cache[key] = c.multi() if multi_contour else c.single()
        out.append(cache[key])
    return out


def reference_boxes(
    cam: Array,
    cam_thresholds: Sequence[float] | np.ndarray,
    multi_contour: bool = False,
) -> list[np.ndarray]:
    """Boxes of one [0, 1] score map at each threshold, exactly as the WSOL reference makes them.

    Rules (see ``shared/notes/wsol-protocol.md``): ``u8 = trunc(cam * 255)``; foreground is
    ``u8 > int(t * max(u8))``; 8-connected regions; single mode keeps the region whose outer
    contour has the largest polygon area (OpenCV ``contourArea``: one-pixel-wide lines have
    area 0; ties go to the first contour in OpenCV's order); multi mode gives every region's
    box plus one box per hole. A box is ``(x, y, x + w, y + h)`` with ``x1``/``y1`` clipped to
    ``W - 1``/``H - 1``; no foreground gives ``(0, 0, 0, 0)``. Returns one ``(n, 4)`` int64
    array per threshold (a single float counts as one threshold). In multi mode the set of
    boxes is the reference's (the order may differ). NaN or out-of-range maps raise
    :class:`InvalidMap` (a ``ValueError``).

    Example:
        >>> import numpy as np
        >>> cam = np.array([[0, 0, 0, 0, 0], [0, .4, .4, .4, .6],
        ...                 [0, .4, 1, .8, .6], [0, .4, .4, .4, .6]])
        >>> [b.tolist() for b in reference_boxes(cam, [0.0, 0.4, 0.8])]
        [[[1, 1, 4, 3]], [[2, 1, 4, 3]], [[2, 2, 3, 3]]]
    """
    u8 = quantise(cam)
    cuts = reference_thresholds(int(u8.max()) if u8.size else 0, cam_thresholds)
    return reference_boxes_u8(u8, cuts, multi_contour)
