"""Faithfulness and pointing metrics of class maps, beside the WSOL scores of :mod:`camviz.metrics`.

Notation: ``x`` is the network input (3, H, W) *as the network sees it* (after its
normalisation, so 0 is the mean colour of a mean/std transform); ``s`` a map (H, W) at the input
size (``res.cams(classes, size="input", normalize=True)``); ``p_c(x)`` the softmax probability
of class ``c``. Every perturbed image goes through ``net.model`` in torch on ``net.device``, in
eval mode as :meth:`camviz.gapnet.GapNet.run` runs it (the caller's mode is put back), whatever
mode the model was left in.

* **Pointing game** (Zhang et al., "Top-down neural attention by excitation backprop",
  ECCV 2016): the point is the map's maximum, ``argmax s`` (the first maximum in row-major
  order, one point per map); a *hit* when some ground-truth pixel q (inside a box, inclusive,
  or on the mask) lies at Euclidean distance ``|q - point| < tolerance`` (15 pixels, the
  paper's tolerance; ``tolerance=0`` asks for the point itself to be inside). The score is the
  paper's mean over classes of each class's hit rate; the hit rate over all images and the per
  class rates come with it. TorchRay's ``PointingGame`` (1.0.0.2) gives the same hits (same
  disc, strict ``<``); its mean also counts classes that have no image as 0, camviz averages
  the classes seen. Quantus (0.6.0) has no tolerance and counts a hit when *any* of tied maxima
  is inside (a constant map always hits): camviz follows the paper's single point.
* **Deletion / insertion** (Petsiuk et al., "RISE", BMVC 2018): pixels are ranked by ``s``,
  highest first (ties: lower flat index first, a stable sort). With ``P = ceil(HW / steps)``
  pixels per step, the curve has points ``k_i = min(i P, HW)`` for ``i = 0 .. ceil(HW / P)``
  (``steps + 1`` points unless ``steps`` nears HW; 224 x 224 in 50 steps: 49 of 1004 pixels,
  the last of 980).
  Deletion: the first ``k_i`` pixels (all channels) take the baseline's values (default 0);
  insertion: the image is the baseline (default RISE's blur, :func:`blur`) except the first
  ``k_i`` pixels, which are the image's. The score is the area under ``p_c`` against the
  perturbed fraction ``k_i / HW`` (trapezoid rule): low deletion and high insertion are good.
  This is RISE's ``CausalMetric`` (its code normalises the trapezoid by the number of steps,
  the same whenever the steps are equal; camviz integrates against the true fractions, as
  torchcam 0.5.0's ``DeletionInsertionMetric`` does, so a short last step counts short).
  Quantus's ``PixelFlipping`` (0.6.0) gives the deletion curve without its first point
  (``p_c(x)``) and sums it unnormalised (``np.trapz(dx=1)``): camviz keeps RISE's curve.
* **Average drop, increase in confidence** (Chattopadhyay et al., "Grad-CAM++", WACV 2018) and
  **average gain** (Zhang et al., "Opti-CAM: Optimizing saliency maps for interpretability",
  CVIU 2024, arXiv:2301.07002): with ``Y = p_c(x)`` and ``O = p_c(x * s)`` (the input times
  the map, pixel by pixel), over N images, in percent:
  ``AD = 100/N sum max(0, Y - O) / Y``, ``IC = 100/N sum [O > Y]``,
  ``AG = 100/N sum max(0, O - Y) / (1 - Y)`` (a zero numerator counts 0 even where the
  denominator is 0). torchcam 0.5.0 divides by ``Y + 1e-7``, pytorch-grad-cam 1.5.7's
  ``DropInConfidence`` returns ``max(0, Y - O)`` undivided: camviz follows the paper.

The class ``c`` is the one given (``camviz eval`` uses the ground-truth label, whose map it
scores) or the top-1 class of ``x``. (The module runs past 500 lines because each metric's
definition and its differences from the reference implementations are written out in full.)

Example:
    >>> import torch
    >>> pg = PointingGame(tolerance=0)
    >>> cam = torch.zeros(2, 8, 8); cam[0, 2, 3] = 1.0; cam[1, 7, 7] = 1.0
    >>> pg.update(cam, [0, 1], boxes=[[[2, 1, 4, 3]], [[0, 0, 3, 3]]]).tolist()
    [1.0, 0.0]
    >>> pg.compute()["pointing_game"], pg.compute()["per_class"]
    (50.0, {0: 100.0, 1: 0.0})
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import ndimage

from camviz.errors import CamvizError
from camviz.hooks import eval_mode
from camviz.images import to_batch

Tensor = torch.Tensor
Baseline = float | str | Tensor | Callable[[Tensor], Tensor]

__all__ = [
    "PointingGame",
    "pointing_hits",
    "max_points",
    "blur",
    "Curves",
    "deletion_insertion",
    "DeletionInsertion",
    "masked_probs",
    "ConfidenceChange",
    "EvalFaithfulness",
    "POINTING_TOLERANCE",
]

#: The pointing game's tolerance (pixels) in Zhang et al.
POINTING_TOLERANCE = 15.0


class _Mergeable:
    """State as JSON and exact merging for accumulators of exact sums (``sums``: name ->
    Fraction, so that shards add up to the very same mean whatever the order) and a ``count``.
    """

    sums: dict[str, Fraction]
    count: int

    def _add(self, name: str, values: Tensor) -> None:
        self.sums[name] += sum((Fraction(v) for v in values.double().reshape(-1).tolist()),
                               Fraction(0))

    def state_dict(self) -> dict[str, Any]:
        """The accumulated sums (exact, as fractions) and count, JSON-ready."""
        return {"sums": {k: str(v) for k, v in self.sums.items()}, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> Any:
        """Restore :meth:`state_dict`; returns self."""
        self.sums = {k: Fraction(v) for k, v in state["sums"].items()}
        self.count = int(state["count"])
        return self

    def merge(self, other: Any) -> Any:
        """Add the sums and count of another shard; returns self."""
        for k, v in other.sums.items():
            self.sums[k] = self.sums.get(k, Fraction(0)) + v
        self.count += other.count
        return self


def _maps(cams: Any, device: torch.device | str | None = None) -> Tensor:
    s = torch.as_tensor(cams)
    if s.ndim == 2:
        s = s[None]
    if s.ndim == 4 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 3:
        raise CamvizError(f"maps must be (H, W), (B, H, W) or (B, 1, H, W); got {tuple(s.shape)}")
    return s.to(device) if device is not None else s


# --------------------------------------------------------------------------------------------
# pointing game
# --------------------------------------------------------------------------------------------


def max_points(cams: Any) -> Tensor:
    """The pointing game's point of each map: (B, 2) long (y, x) of its first maximum.

    Example:
        >>> max_points(torch.tensor([[0.0, 1.0], [1.0, 0.5]])).tolist()
        [[0, 1]]
    """
    s = _maps(cams)
    w = s.shape[-1]
    idx = s.flatten(1).argmax(dim=1)
    return torch.stack((idx // w, idx % w), dim=1)


def _box_d2(pt: Tensor, boxes: Sequence[Any]) -> Tensor:
    """Squared distance from each point to the nearest pixel of its boxes (inf: no box)."""
    rows = [torch.as_tensor(np.asarray(b, dtype=np.float64)).reshape(-1, 4) for b in boxes]
    for r in rows:
        bad = (r[:, 2] < r[:, 0]) | (r[:, 3] < r[:, 1])
        if bool(bad.any()):
            box = [int(v) if float(v).is_integer() else float(v) for v in r[bad][0].tolist()]
            raise CamvizError(f"box {box} has x1 < x0 or y1 < y0: boxes are (x0, y0, x1, y1)")
    m = max((len(r) for r in rows), default=0)
    pad = torch.full((len(rows), max(m, 1), 4), float("nan"), dtype=torch.float64)
    for i, r in enumerate(rows):
        pad[i, : len(r)] = r
    pad = pad.to(pt.device)
    y, x = pt[:, 0, None].double(), pt[:, 1, None].double()
    dx = (pad[..., 0] - x).clamp(min=0) + (x - pad[..., 2]).clamp(min=0)
    dy = (pad[..., 1] - y).clamp(min=0) + (y - pad[..., 3]).clamp(min=0)
    d2 = dx * dx + dy * dy
    return torch.where(torch.isnan(d2), torch.full_like(d2, float("inf")), d2).amin(dim=1)


def _mask_d2(pt: Tensor, masks: Any, shape: tuple[int, int]) -> Tensor:
    """Squared distance from each point to the nearest pixel of its mask (inf: empty mask)."""
    fg = torch.as_tensor(np.asarray(masks) if not isinstance(masks, Tensor) else masks)
    fg = _maps(fg, pt.device) > 0.5
    if tuple(fg.shape[-2:]) != shape or fg.shape[0] != pt.shape[0]:
        raise CamvizError(f"masks {tuple(fg.shape)} and maps {(pt.shape[0], *shape)} differ")
    ys = torch.arange(shape[0], device=pt.device, dtype=torch.float64)
    xs = torch.arange(shape[1], device=pt.device, dtype=torch.float64)
    dy = (ys[None, :] - pt[:, 0, None].double()) ** 2
    dx = (xs[None, :] - pt[:, 1, None].double()) ** 2
    d2 = dy[:, :, None] + dx[:, None, :]
    return torch.where(fg, d2, torch.full_like(d2, float("inf"))).flatten(1).amin(dim=1)


def pointing_hits(
    cams: Any, boxes: Sequence[Any] | None = None, masks: Any = None,
    tolerance: float = POINTING_TOLERANCE,
) -> Tensor:
    """Pointing game of each map against its boxes or its mask: (B,) float, 1 hit, 0 miss, NaN
    where the image has no ground truth (no box, empty mask).

    ``cams`` (B, H, W) (or (H, W)); ``boxes`` one (m, 4) set of inclusive ``(x0, y0, x1, y1)``
    boxes per map, in map pixels; or ``masks`` (B, H, W) (foreground > 0.5). A hit: some
    ground-truth pixel at distance < ``tolerance`` from the map's first maximum (or the
    maximum itself inside).

    Example:
        >>> cam = torch.zeros(1, 40, 40); cam[0, 20, 30] = 1.0
        >>> pointing_hits(cam, boxes=[[[0, 0, 15, 39]]]).tolist()  # 15 pixels away: a miss
        [0.0]
        >>> pointing_hits(cam, boxes=[[[0, 0, 16, 39]]]).tolist()
        [1.0]
    """
    if (boxes is None) == (masks is None):
        raise CamvizError("give the ground truth as boxes or as masks (one of the two)")
    s = _maps(cams)
    pt = max_points(s)
    if boxes is not None:
        if len(boxes) != s.shape[0]:
            raise CamvizError(f"{s.shape[0]} maps but {len(boxes)} sets of boxes")
        d2 = _box_d2(pt, boxes)
    else:
        d2 = _mask_d2(pt, masks, (s.shape[-2], s.shape[-1]))
    hit = ((d2 == 0) | (d2 < float(tolerance) ** 2)).double()
    return torch.where(torch.isinf(d2), torch.full_like(hit, float("nan")), hit)


class PointingGame:
    """Pointing game accumulator (Zhang et al., ECCV 2016; see the module doc).

    ``update(cams, labels, boxes=... | masks=...)`` adds a batch; ``compute()`` gives
    ``pointing_game`` (the paper's score: mean over the classes seen of their hit rates, in
    percent), ``hit_rate`` (over all images), ``per_class`` {label: percent}, ``count``
    (images scored), ``no_ground_truth`` (images left out: no box, empty mask), ``tolerance``.

    Example:
        >>> pg = PointingGame()
        >>> cam = torch.zeros(1, 64, 64); cam[0, 40, 40] = 1.0
        >>> _ = pg.update(cam, [2], masks=torch.ones(1, 64, 64))
        >>> pg.compute()["hit_rate"]
        100.0
    """

    def __init__(self, tolerance: float = POINTING_TOLERANCE) -> None:
        self.tolerance = float(tolerance)
        self.hits: dict[int, int] = {}
        self.total: dict[int, int] = {}
        self.no_ground_truth = 0

    @property
    def count(self) -> int:
        return sum(self.total.values())

    def update(
        self, cams: Any, labels: Any, boxes: Sequence[Any] | None = None, masks: Any = None
    ) -> Tensor:
        """Add maps (B, H, W) with their labels (B,) and boxes or masks; returns the hits
        (:func:`pointing_hits`)."""
        hits = pointing_hits(cams, boxes=boxes, masks=masks, tolerance=self.tolerance)
        lab = [int(v) for v in torch.as_tensor(labels).reshape(-1).tolist()]
        if len(lab) != len(hits):
            raise CamvizError(f"{len(hits)} maps but {len(lab)} labels")
        for c, h in zip(lab, hits.tolist()):
            if math.isnan(h):
                self.no_ground_truth += 1
                continue
            self.total[c] = self.total.get(c, 0) + 1
            self.hits[c] = self.hits.get(c, 0) + int(h)
        return hits

    def state_dict(self) -> dict[str, Any]:
        """Hits and totals per class and the images without ground truth, JSON-ready."""
        return {"tolerance": self.tolerance, "no_ground_truth": self.no_ground_truth,
                "hits": {str(c): v for c, v in self.hits.items()},
                "total": {str(c): v for c, v in self.total.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> PointingGame:
        """Restore :meth:`state_dict`; returns self."""
        self.tolerance, self.no_ground_truth = float(state["tolerance"]), state["no_ground_truth"]
        self.hits = {int(c): int(v) for c, v in state["hits"].items()}
        self.total = {int(c): int(v) for c, v in state["total"].items()}
        return self

    def merge(self, other: PointingGame) -> PointingGame:
        """Add another shard's hits (same tolerance); returns self.

        Example:
            >>> a, b = PointingGame(), PointingGame()
            >>> _ = a.update(torch.ones(1, 4, 4), [0], masks=torch.ones(1, 4, 4))
            >>> _ = b.update(torch.ones(1, 4, 4), [0], masks=torch.zeros(1, 4, 4))
            >>> a.merge(b).count, a.no_ground_truth
            (1, 1)
        """
        if other.tolerance != self.tolerance:
            raise CamvizError("cannot merge pointing games of different tolerances")
        for c, n in other.total.items():
            self.total[c] = self.total.get(c, 0) + n
            self.hits[c] = self.hits.get(c, 0) + other.hits.get(c, 0)
        self.no_ground_truth += other.no_ground_truth
        return self

    def compute(self) -> dict[str, Any]:
        """The scores so far (see the class doc)."""
        if not self.total:
            raise CamvizError("no image with ground truth was added: call update() first")
        per = {c: self.hits[c] * 100.0 / n for c, n in sorted(self.total.items())}
        return {
            "pointing_game": float(np.mean(list(per.values()))),
            "hit_rate": sum(self.hits.values()) * 100.0 / self.count,
            "per_class": per,
            "count": self.count,
            "no_ground_truth": self.no_ground_truth,
            "tolerance": self.tolerance,
        }


# --------------------------------------------------------------------------------------------
# deletion and insertion
# --------------------------------------------------------------------------------------------


def blur(x: Tensor, size: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's insertion baseline: each channel convolved with the ``size`` x ``size`` kernel
    that ``scipy.ndimage.gaussian_filter`` makes of a centred delta (``sigma`` 5, its reflect
    mode; the kernel sums to 1), zero padding at the borders, as RISE's ``gkern``.

    Example:
        >>> blur(torch.ones(1, 3, 32, 32))[0, 0, 16, 16].item()  # doctest: +ELLIPSIS
        1.0...
    """
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    k = torch.as_tensor(ndimage.gaussian_filter(delta, sigma).astype(np.float32))
    c = x.shape[1]
    kern = k.to(x.device, x.dtype)[None, None].expand(c, 1, size, size)
    return torch.nn.functional.conv2d(x, kern, padding=size // 2, groups=c)


def _baseline(spec: Baseline, x: Tensor) -> Tensor:
    if isinstance(spec, str):
        if spec != "blur":
            raise CamvizError(
                f"baseline must be a number, 'blur', a tensor or a callable, not {spec!r}"
            )
        return blur(x)
    if isinstance(spec, (int, float)):
        return torch.full_like(x, float(spec))
    out = spec(x) if callable(spec) else spec
    if not isinstance(out, Tensor):
        raise CamvizError(f"a baseline gives a tensor, not {type(out).__name__}")
    try:
        return torch.broadcast_to(out.to(x.device, x.dtype), x.shape)
    except RuntimeError:
        raise CamvizError(
            f"baseline {tuple(out.shape)} does not fit the input {tuple(x.shape)}"
        ) from None


def _counts(hw: int, steps: int) -> list[int]:
    if int(steps) < 1:
        raise CamvizError(f"steps must be a positive integer, got {steps!r}")
    per = -(-hw // int(steps))
    return [*range(0, hw, per), hw]


def _probs(model: torch.nn.Module, x: Tensor, cls: Tensor) -> Tensor:
    with eval_mode(model):  # a model left in training mode would use (and update) batch stats
        out = model(x)
    if isinstance(out, tuple):
        out = out[0]
    return out.float().softmax(dim=1).gather(1, cls[:, None])[:, 0]


class Curves(NamedTuple):
    """Deletion or insertion curves: ``fractions`` (n,) of pixels perturbed, ``probs`` (B, n)
    of the class at each, ``auc`` (B,) the area under each curve."""

    fractions: Tensor
    probs: Tensor
    auc: Tensor


def _inputs(
    net: Any, res_or_x: Any, cams: Any, classes: Any
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x, maps (B, H, W) at the input size, classes (B,), p_c(x) (B,)) on the device; p_c(x)
    comes from the pass when one is given (``res.probs``), else from a forward of x."""
    x = getattr(res_or_x, "inputs", res_or_x)
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise CamvizError("give a CamResult of net.run or a (B, 3, H, W) input tensor")
    x = to_batch(x, getattr(net, "transform", None)).to(net.device)  # net.run's rules (uint8..)
    if classes is None:
        with torch.inference_mode():
            logits = getattr(res_or_x, "logits", None)
            if logits is None:
                with eval_mode(net.model):
                    logits = net.model(x)
            cls = (logits[0] if isinstance(logits, tuple) else logits).argmax(dim=1)
    else:
        cls = torch.as_tensor(classes).reshape(-1)
        cls = cls.expand(x.shape[0]) if cls.numel() == 1 else cls
    if cams is None:
        if not hasattr(res_or_x, "cams"):
            raise CamvizError("give the maps, or a CamResult to take them from")
        cams = res_or_x.cams(cls.to(res_or_x.device)[:, None], size="input", normalize=True)
    s = _maps(cams, net.device)
    s = s if s.is_floating_point() else s.float()  # ranked in its own precision (no new ties)
    if s.shape[0] != x.shape[0] or tuple(s.shape[-2:]) != tuple(x.shape[-2:]):
        raise CamvizError(
            f"maps {tuple(s.shape)} do not match the input {tuple(x.shape)}: give one map per "
            "image at the input size (res.cams(classes, size='input', normalize=True))"
        )
    cls = cls.to(net.device, torch.long)
    logits = getattr(res_or_x, "logits", None)
    with torch.inference_mode():
        if logits is not None:
            p0 = logits.to(net.device).float().softmax(dim=1).gather(1, cls[:, None])[:, 0]
        else:
            p0 = _probs(net.model, x, cls)
    return x, s, cls, p0


def deletion_insertion(
    net: Any, res_or_x: Any, cams: Any = None, classes: Any = None, steps: int = 50,
    deletion_baseline: Baseline = 0.0, insertion_baseline: Baseline = "blur",
    batch_size: int = 64,
) -> dict[str, Curves]:
    """Deletion and insertion curves of every image (see the module doc), in one set of
    forward passes of ``batch_size`` perturbed images each (both games, all steps, all images).

    ``res_or_x`` is a :class:`camviz.result.CamResult` (its inputs; its maps of ``classes`` when
    ``cams`` is None) or an input tensor (B, 3, H, W) with ``cams`` (B, H, W) at its size.
    ``classes`` (B,) or an int: the class scored (default each image's top-1). Baselines: a
    number (that constant in input space), ``"blur"`` (:func:`blur`), a tensor broadcastable to
    the input, or a callable of the input. Returns {"deletion": Curves, "insertion": Curves}.

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> torch.manual_seed(0) and None
        >>> net = GapNet(nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3), device="cpu")
        >>> out = deletion_insertion(net, net.run(torch.rand(2, 3, 16, 16)), steps=8)
        >>> out["deletion"].probs.shape, out["insertion"].fractions.tolist()[:3]
        (torch.Size([2, 9]), [0.0, 0.125, 0.25])
    """
    x, s, cls, p0 = _inputs(net, res_or_x, cams, classes)
    b, _, h, w = x.shape
    counts = _counts(h * w, steps)
    n = len(counts) - 1
    with torch.inference_mode():
        base = (_baseline(deletion_baseline, x), _baseline(insertion_baseline, x))
        order = s.flatten(1).argsort(dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order).scatter_(
            1, order, torch.arange(h * w, device=x.device).expand(b, -1)
        )
        # jobs: per image, deletion after 1..n steps, then insertion after 0..n-1 steps
        k = torch.tensor(counts, device=x.device)
        job_img = torch.arange(b, device=x.device).repeat_interleave(2 * n)
        job_ins = torch.arange(2 * n, device=x.device).repeat(b) >= n
        job_k = torch.cat((k[1:], k[:-1])).repeat(b)
        out = torch.empty(b * 2 * n, device=x.device)
        for i in range(0, b * 2 * n, int(batch_size)):
            j, ins = job_img[i : i + batch_size], job_ins[i : i + batch_size, None, None, None]
            top = (ranks[j] < job_k[i : i + batch_size, None]).view(-1, 1, h, w)
            first = torch.where(ins, x[j], base[0][j])  # where the top pixels come from
            rest = torch.where(ins, base[1][j], x[j])
            out[i : i + batch_size] = _probs(net.model, torch.where(top, first, rest), cls[j])
    out = out.view(b, 2, n)
    frac = k.double() / (h * w)
    curves = {
        "deletion": torch.cat((p0[:, None], out[:, 0]), dim=1),
        "insertion": torch.cat((out[:, 1], p0[:, None]), dim=1),
    }
    return {
        name: Curves(frac, c, torch.trapezoid(c.double(), frac, dim=1))
        for name, c in curves.items()
    }


class DeletionInsertion(_Mergeable):
    """Mean deletion and insertion AUCs over a dataset (:func:`deletion_insertion` per batch).

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> di = DeletionInsertion(net, steps=4)
        >>> _ = di.update(net.run(torch.rand(2, 3, 8, 8)))
        >>> sorted(di.compute())
        ['count', 'deletion_auc', 'insertion_auc', 'steps']
    """

    def __init__(
        self, net: Any, steps: int = 50, deletion_baseline: Baseline = 0.0,
        insertion_baseline: Baseline = "blur", batch_size: int = 64,
    ) -> None:
        self.net, self.steps, self.batch_size = net, int(steps), int(batch_size)
        self.baselines = (deletion_baseline, insertion_baseline)
        self.sums = {"deletion": Fraction(0), "insertion": Fraction(0)}
        self.count = 0

    def update(self, res_or_x: Any, cams: Any = None, classes: Any = None) -> dict[str, Curves]:
        """Add a batch (arguments as :func:`deletion_insertion`); returns its curves."""
        out = deletion_insertion(
            self.net, res_or_x, cams, classes, self.steps, *self.baselines, self.batch_size
        )
        for name, c in out.items():
            self._add(name, c.auc)
        self.count += len(out["deletion"].auc)
        return out

    def compute(self) -> dict[str, Any]:
        """``deletion_auc`` and ``insertion_auc`` (means, in [0, 1]), ``count``, ``steps``."""
        if self.count == 0:
            raise CamvizError("no image was added: call update() before compute()")
        return {
            "deletion_auc": float(self.sums["deletion"] / self.count),
            "insertion_auc": float(self.sums["insertion"] / self.count),
            "count": self.count,
            "steps": self.steps,
        }


# --------------------------------------------------------------------------------------------
# average drop, increase in confidence, average gain
# --------------------------------------------------------------------------------------------


def masked_probs(
    net: Any, res_or_x: Any, cams: Any = None, classes: Any = None
) -> tuple[Tensor, Tensor]:
    """``(Y, O)``: the class probability on each input and on the input times its map, (B,)
    each (arguments as :func:`deletion_insertion`).

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> x = torch.rand(2, 3, 8, 8)
        >>> y, o = masked_probs(net, x, torch.ones(2, 8, 8), classes=1)
        >>> torch.equal(y, o)
        True
    """
    x, s, cls, p0 = _inputs(net, res_or_x, cams, classes)
    with torch.inference_mode():
        return p0, _probs(net.model, x * s[:, None].to(x.dtype), cls)


class ConfidenceChange(_Mergeable):
    """Average drop, increase in confidence and average gain (percent; see the module doc).

    Example:
        >>> cc = ConfidenceChange(None)
        >>> cc.add(torch.tensor([0.5, 0.8]), torch.tensor([0.25, 0.9]))
        >>> r = cc.compute()
        >>> r["average_drop"], r["increase_in_confidence"], round(r["average_gain"], 3)
        (25.0, 50.0, 25.0)
    """

    def __init__(self, net: Any) -> None:
        self.net = net
        self.sums = {k: Fraction(0)
                     for k in ("average_drop", "increase_in_confidence", "average_gain")}
        self.count = 0

    def update(self, res_or_x: Any, cams: Any = None, classes: Any = None) -> tuple[Tensor, Tensor]:
        """Add a batch (arguments as :func:`deletion_insertion`); returns ``(Y, O)``."""
        y, o = masked_probs(self.net, res_or_x, cams, classes)
        self.add(y, o)
        return y, o

    def add(self, y: Tensor, o: Tensor) -> None:
        """Add probabilities measured elsewhere: ``y`` on the inputs, ``o`` on the masked ones."""
        y, o = y.double(), o.double()
        zero = torch.zeros_like(y)
        drop, gain = (y - o).clamp(min=0), (o - y).clamp(min=0)
        self._add("average_drop", torch.where(drop > 0, drop / y, zero))
        self._add("increase_in_confidence", (o > y).double())
        self._add("average_gain", torch.where(gain > 0, gain / (1 - y), zero))
        self.count += len(y)

    def compute(self) -> dict[str, Any]:
        """``average_drop``, ``increase_in_confidence``, ``average_gain`` (percent), ``count``."""
        if self.count == 0:
            raise CamvizError("no image was added: call update() before compute()")
        out: dict[str, Any] = {k: float(v * 100 / self.count) for k, v in self.sums.items()}
        out["count"] = self.count
        return out


class EvalFaithfulness:
    """What ``camviz eval`` adds beside the WSOL scores: the pointing game on the boxes and on
    the masks (whichever the data has), and with ``perturb`` the network-driven metrics
    (deletion, insertion, average drop, increase in confidence, average gain) of the same maps.

    Example:
        >>> ev = EvalFaithfulness(None, perturb=False)
        >>> cam = torch.zeros(1, 32, 32); cam[0, 5, 5] = 1.0
        >>> ev.update(None, cam, torch.tensor([0]), boxes=[[[0, 0, 9, 9]]])
        >>> ev.compute()["pointing_game_box"]
        100.0
    """

    def __init__(
        self, net: Any, perturb: bool = False, steps: int = 50,
        tolerance: float = POINTING_TOLERANCE, batch_size: int = 64,
    ) -> None:
        self.box, self.mask = PointingGame(tolerance), PointingGame(tolerance)
        self.di = DeletionInsertion(net, steps, batch_size=batch_size) if perturb else None
        self.cc = ConfidenceChange(net) if perturb else None

    def update(
        self, res: Any, maps: Tensor, labels: Tensor, boxes: Sequence[Any] | None = None,
        masks: Any = None,
    ) -> None:
        """Add a batch: the pass ``res``, its scored maps (B, H, W) at the input size, the
        labels, and the boxes and/or masks at the maps' size."""
        if boxes is not None:
            self.box.update(maps, labels, boxes=boxes)
        if masks is not None:
            self.mask.update(maps, labels, masks=masks)
        if self.di is not None and self.cc is not None:
            self.di.update(res, maps, labels)
            self.cc.update(res, maps, labels)

    def state_dict(self) -> dict[str, Any]:
        """Every accumulator's state, JSON-ready (for checkpoints and sharded evaluations)."""
        return {"box": self.box.state_dict(), "mask": self.mask.state_dict(),
                "di": None if self.di is None else self.di.state_dict(),
                "cc": None if self.cc is None else self.cc.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> EvalFaithfulness:
        """Restore :meth:`state_dict` (into accumulators made with the same settings)."""
        self.box.load_state_dict(state["box"])
        self.mask.load_state_dict(state["mask"])
        for name in ("di", "cc"):
            acc, got = getattr(self, name), state[name]
            if (acc is None) != (got is None):
                raise CamvizError("faithfulness state made with other settings (perturb)")
            if acc is not None:
                acc.load_state_dict(got)
        return self

    def merge(self, other: EvalFaithfulness) -> EvalFaithfulness:
        """Add another shard's accumulators (same settings); returns self.

        Example:
            >>> a, b = EvalFaithfulness(None), EvalFaithfulness(None)
            >>> cam = torch.zeros(1, 32, 32); cam[0, 5, 5] = 1.0
            >>> b.update(None, cam, torch.tensor([0]), boxes=[[[0, 0, 9, 9]]])
            >>> a.merge(b).compute()["pointing_game_box"]
            100.0
        """
        self.box.merge(other.box)
        self.mask.merge(other.mask)
        for mine, theirs in ((self.di, other.di), (self.cc, other.cc)):
            if (mine is None) != (theirs is None):
                raise CamvizError("cannot merge faithfulness of different settings (perturb)")
            if mine is not None:
                mine.merge(theirs)
        return self

    def compute(self) -> dict[str, Any]:
        """Flat report keys: ``pointing_game_box`` / ``pointing_game_mask`` (None without that
        ground truth), ``pointing_game`` (their details), and with ``perturb``
        ``deletion_auc``, ``insertion_auc``, ``average_drop``, ``increase_in_confidence``,
        ``average_gain`` and ``faithfulness`` (settings and counts)."""
        out: dict[str, Any] = {"pointing_game": {}}
        for name, pg in (("box", self.box), ("mask", self.mask)):
            r = pg.compute() if pg.total else None
            out[f"pointing_game_{name}"] = r["pointing_game"] if r else None
            if r:
                r["per_class"] = {str(c): v for c, v in r["per_class"].items()}
                out["pointing_game"][name] = r
        if self.di is not None and self.cc is not None and self.di.count:
            d, c = self.di.compute(), self.cc.compute()
            out.update({k: d[k] for k in ("deletion_auc", "insertion_auc")})
            out.update({k: v for k, v in c.items() if k != "count"})
            out["faithfulness"] = {
                "count": d["count"], "steps": d["steps"], "class": "ground truth",
                "deletion_baseline": str(self.di.baselines[0]),
                "insertion_baseline": str(self.di.baselines[1]),
            }
        return out
