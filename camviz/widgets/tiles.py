"""Units for the browser, as plain values: tiles of a class's top units, one unit's map on the
main view, and a unit's top dataset images checked against the scan.

No ipywidgets and no plotly. Unit masks follow one rule everywhere (tiles, main view, gallery):
``f_k > T_k`` at the scan's dataset quantile given per-unit thresholds (``camviz.units``), else
``f_k > threshold * max f_k`` on the image.

Example:
    >>> import torch
    >>> from camviz.result import CamResult
    >>> f = torch.rand(1, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> res = CamResult(torch.zeros(1, 2), f, torch.zeros(2, 3),
    ...                 torch.zeros(2), "avg", ["a", "b"], inputs=torch.zeros(1, 3, 4, 4))
    >>> map01, m, mark = unit_map(res, 1, None, 0.5)
    >>> map01.shape, m.shape, 0.0 <= mark <= 1.0
    ((4, 4), (4, 4), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from camviz.errors import CamvizError
from camviz.galleries import run_items, show_mask
from camviz.localize import mask as _mask
from camviz.maps import min_max
from camviz.render import grid, overlay
from camviz.units import threshold_masks, unit_masks

__all__ = ["TILE_COLOR", "GALLERY_FAILURES", "UnitTile", "UnitDetail", "Pictures", "unit_tiles",
           "tile_pictures", "outlined", "draw_edge", "unit_map", "top_image_panel"]

TILE_COLOR = (255, 255, 255)
#: What a gallery may fail with (a dataset that is not the one scanned, a bad item, an index
#: out of range): shown in the panel, never raised out of a widget callback.
GALLERY_FAILURES = (CamvizError, OSError, ValueError, RuntimeError, IndexError, KeyError,
                    TypeError)


@dataclass(frozen=True, eq=False)
class UnitTile:
    """One of the class's top units on the image: its map over the thumbnail, mask outlined."""

    unit: int
    weight: float  # w_ck
    share: float  # w_ck mean(f_k) / (logit - bias)
    area: float  # fraction of the image inside its mask
    mask: np.ndarray  # bool (th, tw)
    tile: np.ndarray  # uint8 (th, tw, 3)


@dataclass(frozen=True, eq=False)
class UnitDetail:
    """The selected unit: its numbers on this image, and its top dataset images when known.

    ``top``: (dataset index, spatial max) of its top images, None without statistics;
    ``gallery``: those images with its mask (needs the dataset), or why it failed in ``error``.
    """

    unit: int
    weight: float
    pooled: float
    contribution: float
    share: float
    top: tuple[tuple[int, float], ...] | None = None
    gallery: np.ndarray | None = None
    error: str | None = None


def unit_tiles(
    res: Any, ids: torch.Tensor, thumb: np.ndarray, cmap: str,
    thresholds: torch.Tensor | None, threshold: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(tile, mask) of each unit ``ids`` of a one-image result, drawn on ``thumb``.

    A tile is the unit's raw map ``f_k`` upsampled bilinearly to the thumbnail, min-max
    normalised, over the thumbnail (alpha 0.5), with its mask outlined. The mask is
    ``f_k > T_k`` (``camviz.units.threshold_masks``) given per-unit ``thresholds`` (K,), else
    ``f_k > threshold * max f_k``. (:func:`tile_pictures` and :func:`outlined` are its two
    halves: the pictures do not depend on the threshold.)

    Example:
        >>> from camviz.result import CamResult
        >>> f = torch.rand(1, 3, 2, 2, generator=torch.Generator().manual_seed(0))
        >>> res = CamResult(torch.zeros(1, 2), f, torch.zeros(2, 3),
        ...                 torch.zeros(2), "avg", ["a", "b"])
        >>> tile, m = unit_tiles(res, torch.tensor([1]), np.zeros((4, 4, 3), np.uint8),
        ...                      "jet", None, 0.5)[0]
        >>> tile.shape, m.shape
        ((4, 4, 3), (4, 4))
    """
    return outlined(res, ids, tile_pictures(res, ids, thumb, cmap), thresholds, threshold)


@dataclass(frozen=True, eq=False)
class Pictures:
    """The threshold-free half of unit tiles: raw maps upsampled to the thumbnail, and those
    maps (min-max normalised) over the thumbnail."""

    raw: torch.Tensor  # (1, n, h, w) f_k
    up: torch.Tensor  # (n, th, tw) f_k upsampled
    pictures: tuple[np.ndarray, ...]  # uint8 (th, tw, 3)


def tile_pictures(res: Any, ids: torch.Tensor, thumb: np.ndarray, cmap: str) -> Pictures:
    """The units' maps over the thumbnail (no mask yet).

    Example:
        >>> from camviz.result import CamResult
        >>> f = torch.rand(1, 3, 2, 2, generator=torch.Generator().manual_seed(0))
        >>> res = CamResult(torch.zeros(1, 2), f, torch.zeros(2, 3),
        ...                 torch.zeros(2), "avg", ["a", "b"])
        >>> tile_pictures(res, torch.tensor([0, 2]), np.zeros((4, 6, 3), np.uint8), "jet").up.shape
        torch.Size([2, 4, 6])
    """
    raw = res.unit_maps(ids)  # (1, n, h, w)
    up = F.interpolate(raw, size=thumb.shape[:2], mode="bilinear", align_corners=False)[0]
    maps01 = min_max(up).cpu().numpy()
    return Pictures(raw, up, tuple(overlay(thumb, m, alpha=0.5, cmap=cmap) for m in maps01))


def outlined(res: Any, ids: torch.Tensor, pics: Pictures, thresholds: torch.Tensor | None,
             threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """(tile, mask) per unit: each picture with its unit's mask outlined (see
    :func:`unit_tiles`).

    Example:
        >>> from camviz.result import CamResult
        >>> f = torch.rand(1, 3, 2, 2, generator=torch.Generator().manual_seed(0))
        >>> res = CamResult(torch.zeros(1, 2), f, torch.zeros(2, 3),
        ...                 torch.zeros(2), "avg", ["a", "b"])
        >>> ids = torch.tensor([1])
        >>> pics = tile_pictures(res, ids, np.zeros((4, 4, 3), np.uint8), "jet")
        >>> outlined(res, ids, pics, None, 1.0)[0][1].any()  # nothing above its max
        np.False_
    """
    size = tuple(pics.up.shape[-2:])
    if thresholds is not None:
        masks = threshold_masks(pics.raw, thresholds[ids.to(thresholds.device)], size=size)[0]
    else:
        masks = _mask(pics.up, float(threshold))
    masks_np = masks.cpu().numpy()
    return [(draw_edge(pic, m, TILE_COLOR), m) for pic, m in zip(pics.pictures, masks_np,
                                                                 strict=True)]


_CROSS = ndimage.generate_binary_structure(2, 1)


def draw_edge(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """``image`` with the inner boundary of ``mask`` in ``color``: the pixels of the mask with a
    4-neighbour outside it (the image's border does not count), the same pixels as
    :func:`camviz.render.outline` (scikit-image's ``find_boundaries(mode="inner")``) in a tenth
    of its time on a tile (one scipy erosion instead of a grey dilation and erosion).

    Example:
        >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True
        >>> int((draw_edge(np.zeros((5, 5, 3), np.uint8), m, (255, 0, 0))[..., 0] == 255).sum())
        8
    """
    m = np.asarray(mask, dtype=bool)
    out = np.array(image, dtype=np.uint8, copy=True)
    out[m & ~ndimage.binary_erosion(m, _CROSS, border_value=1)] = color
    return out


def _masks_and_maps(raw: torch.Tensor, ids: torch.Tensor, size: tuple[int, int],
                    thresholds: torch.Tensor | None, threshold: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    up = F.interpolate(raw, size=size, mode="bilinear", align_corners=False)
    if thresholds is not None:
        masks = threshold_masks(raw, thresholds[ids.to(thresholds.device)], size=size)[0]
    else:
        masks = _mask(up[0], float(threshold))
    return masks.cpu().numpy(), min_max(up[0]).cpu().numpy()


def unit_map(res: Any, unit: int, thresholds: torch.Tensor | None, threshold: float
             ) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Unit ``unit`` on the main view of a one-image result: its map at the input size in
    [0, 1], its mask (the tiles' rule, at the input size) and where the mask's threshold lies
    on the map's 0..1 colour scale (None when it lies outside: the mask is then empty or full).

    The map is ``f_k`` upsampled bilinearly and min-max normalised; the threshold ``T``
    (``T_k``, or ``threshold * max``) sits at ``(T - min) / (max - min)`` of that scale.

    Example:
        >>> from camviz.result import CamResult
        >>> f = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> res = CamResult(torch.zeros(1, 1), f, torch.ones(1, 1), torch.zeros(1), "avg",
        ...                 ["a"], inputs=torch.zeros(1, 3, 2, 2))
        >>> map01, m, mark = unit_map(res, 0, torch.tensor([1.5]), 0.2)
        >>> m.tolist(), mark
        ([[False, False], [True, True]], 0.5)
    """
    ids = torch.tensor([int(unit)], device=res.device)
    raw = res.unit_maps(ids)
    masks, maps01 = _masks_and_maps(raw, ids, res.input_size, thresholds, threshold)
    up = F.interpolate(raw, size=res.input_size, mode="bilinear", align_corners=False)[0, 0]
    lo, hi = float(up.min()), float(up.max())
    t = float(thresholds[int(unit)]) if thresholds is not None else float(threshold) * hi
    mark = (t - lo) / (hi - lo) if hi > lo else None
    return maps01[0], masks[0], (mark if mark is not None and 0.0 <= mark <= 1.0 else None)


def top_image_panel(net: Any, dataset: Any, stats: Any, unit: int, n: int,
                    level: float | None) -> np.ndarray:
    """Unit ``unit``'s top-``n`` images of ``dataset`` (by the scan), its mask shown on each,
    as one uint8 panel; one pass of the network on those images.

    The statistics keep dataset indices, not pixels, so the dataset must be the one scanned: a
    dataset of another length, or one whose images give the unit another spatial maximum than
    the scan recorded (2% tolerance, for batch and precision differences), is refused with a
    :class:`CamvizError` saying so.

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> from camviz.scan import scan
        >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 2), device="cpu")
        >>> data = [torch.rand(3, 8, 8) for _ in range(3)]
        >>> st = scan(net, data, cache=False, progress=False)
        >>> top_image_panel(net, data, st, 0, 2, None).dtype
        dtype('uint8')
    """
    idx, val = stats.top_images(int(unit), n)
    if idx.numel() == 0:
        raise CamvizError(f"unit {unit} has no top images in these statistics: was the scan "
                          "empty?")
    scanned = int(getattr(stats, "num_images", 0) or 0)
    if scanned and len(dataset) != scanned:
        raise CamvizError(
            f"dataset= has {len(dataset)} images but the statistics were scanned on {scanned}: "
            "give the dataset that was scanned (the scan kept indices, not pixels)")
    res = run_items(net, dataset, idx.tolist())
    got = res.unit_maps([int(unit)]).amax(dim=(2, 3))[:, 0].cpu()
    want = val.detach().to("cpu", got.dtype)
    off = (got - want).abs() > 0.02 * want.abs().clamp_min(1e-6) + 1e-6
    if bool(off.any()):
        j = int(off.nonzero()[0, 0])
        raise CamvizError(
            f"dataset image #{int(idx[j])} gives unit {unit} a maximum of {float(got[j]):.4g}, "
            f"the scan recorded {float(want[j]):.4g}: dataset= is not the dataset that was "
            "scanned (or its images or preprocessing changed); give the scanned dataset")
    masks = unit_masks(res, stats, [int(unit)], level=level)[:, 0]
    images = res.images()
    tiles = [show_mask(images[j], masks[j]) for j in range(len(images))]
    labels = [f"#{int(i)} max {float(v):.3g}" for i, v in zip(idx, val, strict=True)]
    return np.asarray(grid(tiles, labels, cols=len(tiles)))
