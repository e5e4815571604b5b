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
level down (:mod:`camviz.onepass`, compiled by numba, cached under ``~/.cache/camviz/numba``)
sees every threshold's regions on the way — instead of labelling the map once per threshold
(``method="naive"`` does that: the oracle of the tests and the benchmark's baseline).

Example:
    >>> import numpy as np
    >>> acc = BoxAccuracy(cam_thresholds=np.arange(0, 1, 0.1))
    >>> cam = np.zeros((8, 8)); cam[2:6, 2:6] = 1.0
    >>> acc.update(cam, np.array([[2, 2, 5, 5]]))  # the reference's box is (2, 2, 6, 6)
    >>> acc.compute()["MaxBoxAcc@50"], acc.compute()["MaxBoxAcc@70"]
    (100.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from camviz.errors import CamvizError
from camviz.localize import PAPER_THRESHOLD, quantise, reference_boxes_u8, reference_thresholds
from camviz.onepass import iou_by_level

__all__ = [
    "box_iou",
    "best_iou_curve",
    "BoxAccuracy",
    "PixelAP",
    "ClassicLocalization",
    "default_cam_thresholds",
]

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
    ``method="fast"`` (default) finds all thresholds' regions in one union-find pass
    (:mod:`camviz.onepass`, compiled by numba: the first call in a fresh cache compiles it, a
    few seconds; without numba it raises :class:`CamvizError`); ``"naive"`` builds them one
    threshold at a time (:func:`camviz.localize.reference_boxes_u8`), the oracle of the
    tests and the benchmark's baseline, about 50x slower. Both give identical results.

    Example:
        >>> import numpy as np
        >>> cam = np.zeros((6, 6)); cam[1:4, 1:4] = 0.5; cam[2, 2] = 1.0
        >>> best_iou_curve(cam, [[1, 1, 3, 3]], [0.0, 0.6]).round(3).tolist()
        [0.562, 0.444]
    """
    if method not in ("fast", "naive"):
        raise CamvizError(f"method must be 'fast' or 'naive', not {method!r}")
    ts = default_cam_thresholds() if cam_thresholds is None else np.asarray(cam_thresholds)
    gt = _boxes_arg(gt_boxes)
    u8 = quantise(cam)
    cuts = reference_thresholds(int(u8.max()), ts)
    # the kernel's indices are int32; a map too large for them takes the naive path
    if method == "naive" or (u8.shape[0] + 2) * (u8.shape[1] + 2) >= 2**31:
        bx = reference_boxes_u8(u8, cuts, multi_contour)
        return np.array([_iou(b[:, None], gt[None]).max() for b in bx], dtype=np.float64)
    # foreground u8 > cut is u8 >= key, key the lowest level of the map above the cut
    levels = np.flatnonzero(np.bincount(u8.ravel(), minlength=256))
    pos = np.searchsorted(levels, cuts, side="right")
    empty = pos >= len(levels)  # nothing above the cut: the box (0, 0, 0, 0)
    key = levels[np.minimum(pos, len(levels) - 1)]
    res = np.empty(len(cuts), dtype=np.float64)
    if empty.any():
        res[empty] = _iou(np.zeros((1, 1, 4), np.int64), gt[None]).max()
    keys = np.unique(key[~empty])
    if len(keys):
        best = iou_by_level(u8, keys, gt, bool(multi_contour))
        res[~empty] = best[np.searchsorted(keys, key[~empty])]
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
