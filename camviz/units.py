"""Class-specific units (CAM paper, sec. 5): the top units of a class and their masks.

A class map is the sum of its units' maps ``w_ck f_k``. A unit is shown the Network Dissection
way: its raw map ``f_k`` is upsampled bilinearly to the image and thresholded at its dataset-wide
quantile ``T_k`` (from :func:`camviz.scan`, at the scan's level, 0.995 by default): mask =
value > T_k, strictly, so a unit whose spatial max is <= T_k has an empty mask (bilinear
upsampling never exceeds the max of the cells). Dissection against part masks is in
:mod:`camviz.dissect`, pictures of units in :mod:`camviz.galleries`.

Example:
    >>> import torch
    >>> maps = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])          # one image, one unit, 2 x 2
    >>> threshold_masks(maps, torch.tensor([2.0]), size=None)[0, 0].tolist()
    [[False, False], [False, True]]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from camviz.errors import CamvizError
from camviz.result import CamResult
from camviz.unitstats import UnitStats, check_match

if TYPE_CHECKING:
    from camviz.gapnet import GapNet

__all__ = ["IMAGE_LEVEL", "MIN_CELLS_ABOVE", "class_index", "class_units", "threshold_masks",
           "threshold_source", "unit_masks", "unit_thresholds"]

#: Default quantile level of per-image thresholds (``thresholds="image"``): the top 20% of each
#: unit's cells on that image. Such masks always cover about that share of the image, whatever
#: the unit detects: a view of where a unit fires most on one photo, not a dataset threshold.
IMAGE_LEVEL = 0.8
#: A scan's threshold at level q rests on the cells above it: fewer than this many per unit
#: (images x cells x (1 - q)) is too few to trust, and unit_masks warns.
MIN_CELLS_ABOVE = 50


def class_index(classes: Sequence[str], cls: int | str) -> int:
    """A class given by name or index -> its index (CamvizError when unknown).

    Example:
        >>> class_index(["cat", "dog"], "dog")
        1
    """
    if isinstance(cls, str):
        if cls in classes:
            return list(classes).index(cls)
        if cls.isdigit() and int(cls) < len(classes):
            return int(cls)
        shown = ", ".join(list(classes)[:12]) + (", ..." if len(classes) > 12 else "")
        raise CamvizError(f"unknown class {cls!r}; the network's {len(classes)} classes are "
                          f"{shown}")
    c = int(cls)
    if not 0 <= c < len(classes):
        raise CamvizError(f"class index {c} out of range 0..{len(classes) - 1}")
    return c


def class_units(
    net: GapNet | UnitStats, cls: int | str, k: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` units with the largest head weight ``w_ck`` for class ``cls`` (paper, sec. 5).

    Returns ``(ids, weights)``, both (k,), best first. ``net`` is a GapNet (or anything with
    ``head_weight`` and ``classes``, such as :class:`~camviz.scan.UnitStats`' ``weight``).

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> with torch.no_grad():
        ...     net.model.head.weight[1] = torch.tensor([0.1, 0.9, -1.0, 0.5])
        >>> class_units(net, 1, k=2)[0].tolist()
        [1, 3]
    """
    weight = net.head_weight if hasattr(net, "head_weight") else net.weight
    c = class_index(net.classes, cls)
    k = min(int(k), weight.shape[1])
    top = weight[c].topk(k)
    return top.indices, top.values


# ---------------------------------------------------------------------------------- masks


def threshold_masks(
    maps: torch.Tensor, thresholds: torch.Tensor, size: tuple[int, int] | None
) -> torch.Tensor:
    """Unit masks from raw unit maps (B, n, h, w) and per-unit thresholds (n,) or (B, n).

    The maps are upsampled bilinearly (``align_corners=False``) to ``size`` (None: as they are)
    and compared strictly: ``mask = value > T``. Returns a bool tensor (B, n, *size).

    Example:
        >>> m = torch.ones(1, 1, 2, 2)
        >>> threshold_masks(m, torch.tensor([1.0]), size=(4, 4)).any().item()   # max == T
        False
    """
    if maps.ndim != 4:
        raise CamvizError(f"maps must be (B, n, h, w), got {tuple(maps.shape)}")
    t = thresholds.to(maps.device, maps.dtype)
    t = t[None, :, None, None] if t.ndim == 1 else t[:, :, None, None]
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        top = maps.amax(dim=(2, 3), keepdim=True)
        maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
        # bilinear weights sum to 1 only up to rounding: clamp so that no upsampled value
        # exceeds the largest cell, which makes "empty when max <= T" hold exactly
        maps = torch.minimum(maps, top)
    return maps > t


def unit_thresholds(stats: UnitStats | torch.Tensor, level: float | None = None) -> torch.Tensor:
    """Per-unit thresholds (K,): ``stats.thresholds(level)`` (None: the scan's own level), or
    the tensor itself when thresholds are given directly.

    Example:
        >>> unit_thresholds(torch.tensor([0.5, 1.0])).tolist()
        [0.5, 1.0]
    """
    return stats if isinstance(stats, torch.Tensor) else stats.thresholds(level)


def threshold_source(stats: UnitStats | torch.Tensor | str, level: float | None = None) -> str:
    """Where unit thresholds come from, in words, for labels: a scan (its image count and
    level), per-image quantiles, or thresholds given directly.

    Example:
        >>> threshold_source("image")
        "per-image quantile 0.8 (the top 20% of each unit's cells on this image)"
    """
    if isinstance(stats, str):
        q = IMAGE_LEVEL if level is None else float(level)
        return f"per-image quantile {q:g} (the top {1 - q:.0%} of each unit's cells on this image)"
    if isinstance(stats, torch.Tensor):
        return "thresholds given directly"
    q = stats.level if level is None else float(level)
    return f"dataset quantile {q:g} from a scan of {stats.num_images} images"


def _image_thresholds(maps: torch.Tensor, level: float) -> torch.Tensor:
    """Each map's quantile at ``level`` over its own cells (B, n). Above the map's minimum the
    cells at the quantile count as inside (a saturated unit, ReLU6, has a plateau of equal
    maxima that a strict cut would leave out), less a relative 1e-6 for bilinear rounding."""
    if not 0.0 <= level < 1.0:
        raise CamvizError(f"a per-image level must lie in [0, 1), got {level}")
    cells = maps.flatten(-2).float()
    t = torch.quantile(cells, level, dim=-1)
    inside = t > cells.amin(dim=-1)
    return torch.where(inside, t - 1e-6 * t.abs(), t)


def _warn_if_thin(stats: UnitStats, level: float | None) -> None:
    q = stats.level if level is None else float(level)
    h, w = stats.feature_size
    above = stats.num_images * max(1, h * w) * (1.0 - q)
    if stats.num_images and above < MIN_CELLS_ABOVE:
        warnings.warn(
            f"unit thresholds at quantile {q:g} from a scan of only {stats.num_images} images "
            f"rest on about {above:.0f} cells per unit: scan more images, lower the level, or "
            "use per-image thresholds (thresholds='image')",
            stacklevel=3,
        )


def unit_masks(
    res: CamResult,
    stats: UnitStats | torch.Tensor | str,
    units: Sequence[int] | torch.Tensor,
    level: float | None = None,
    size: str | tuple[int, int] | None = "input",
) -> torch.Tensor:
    """Masks of ``units`` on the images of a :class:`~camviz.result.CamResult` (B, n, H, W) bool.

    ``stats`` is the source of the thresholds: the :class:`UnitStats` of a scan of this
    network (each unit's dataset quantile at ``level``; a warning says when the scan is too
    small for that level; statistics of another network are refused,
    :func:`~camviz.unitstats.check_match`), thresholds (K,) given directly, or ``"image"``:
    each unit's quantile over this image's own cells at ``level`` (default
    :data:`IMAGE_LEVEL`), for a photo with no dataset to scan. :func:`threshold_source` says
    which, for labels. ``units``: ids (n,) shared by all images, or (B, n) per image (e.g.
    ``res.units(c).ids``). ``size``: "input" (the network input), None (feature cells) or (H, W).

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> res = net.run(torch.rand(2, 3, 8, 8))
        >>> unit_masks(res, torch.zeros(4), [0, 3]).shape
        torch.Size([2, 2, 8, 8])
        >>> unit_masks(res, "image", [0, 3], size=None).float().mean().item()  # top 20% of cells
        0.203125
    """
    if isinstance(stats, UnitStats):
        check_match(stats, res)
    ids = torch.as_tensor(units, device=res.device, dtype=torch.long)
    maps = res.unit_maps(ids)  # (B, n, h, w) raw f_k
    hw = res.input_size if size == "input" else size
    if isinstance(stats, str):
        if stats != "image":
            raise CamvizError(f"thresholds are a scan's UnitStats, a tensor or 'image', "
                              f"got {stats!r}")
        t = _image_thresholds(maps, IMAGE_LEVEL if level is None else float(level))
        return threshold_masks(maps, t, None if hw is None else tuple(hw))
    if isinstance(stats, UnitStats):
        _warn_if_thin(stats, level)
    t_all = unit_thresholds(stats, level).to(res.device)
    if t_all.shape[0] != res.features.shape[1]:
        raise CamvizError(
            f"{t_all.shape[0]} thresholds for a network of {res.features.shape[1]} units; "
            "use the UnitStats of a scan of this network"
        )
    t = t_all[ids]
    return threshold_masks(maps, t, None if hw is None else tuple(hw))
