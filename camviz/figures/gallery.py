"""The units of a class (CAM paper, section 5): each top unit over its top dataset images.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from camviz.gapnet import GapNet
    >>> from camviz.scan import scan
    >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
    >>> data = [torch.rand(3, 8, 8) for _ in range(3)]
    >>> fig = class_units(net, scan(net, data, cache=False, progress=False), data, 0, units=2,
    ...                   images=3)
    >>> sum(ax.get_label() == "unit" for ax in fig.axes)
    6
"""

from __future__ import annotations

from typing import Any

import torch
from matplotlib.figure import Figure

from camviz.errors import CamvizError
from camviz.figures.sizes import DEFAULT_CMAP
from camviz.figures.style import (
    MASK_COLOR,
    UNIT_LABEL,
    as_numpy,
    colorbar,
    map_panel,
    mask_panel,
    outline,
    panel_grid,
    row_label,
    styled,
    text_height,
)
from camviz.galleries import run_items
from camviz.units import class_index, unit_masks
from camviz.units import class_units as units_by_weight


def rank_units(net: Any, stats: Any, c: int, k: int, order: str) -> tuple[list[int], list[float]]:
    """Class ``c``'s top-``k`` units, by head weight w_ck ("weight") or by their mean
    contribution w_ck * mean pooled f_k over the scanned images labelled ``c``
    ("contribution"). Returns (unit ids, weights w_ck), best first.

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> len(rank_units(net, None, 1, 3, "weight")[0])
        3
    """
    if order == "weight":
        ids, w = units_by_weight(net, c, k)
        return ids.tolist(), w.tolist()
    if order != "contribution":
        raise CamvizError(f"order must be 'weight' or 'contribution', got {order!r}")
    contrib = stats.class_contributions("label")[c]
    if not torch.isfinite(contrib).all():
        raise CamvizError(f"no scanned image is labelled {net.classes[c]!r}, so its units have "
                          "no mean contribution; use order='weight' or scan labelled data")
    ids = contrib.topk(min(int(k), contrib.numel())).indices.tolist()
    weight = net.head_weight[c]
    return ids, [float(weight[u]) for u in ids]


def _row_text(unit: int, w: float, dissection: Any) -> str:
    text = f"unit {unit}\nw = {w:.3g}"
    if dissection is not None:
        label = dissection.labels[unit]
        iou = float(dissection.best_iou[unit])
        text += f"\n{label} (IoU {iou:.2f})" if label else f"\nno concept (IoU {iou:.2f})"
    return text


@styled
def class_units(
    net: Any,
    stats: Any,
    dataset: Any,
    cls: int | str,
    units: int = 4,
    images: int = 4,
    order: str = "weight",
    dissection: Any = None,
    level: float | None = None,
    show: str = "mask",
    width: float | str = "page",
    cmap: str = DEFAULT_CMAP,
) -> Figure:
    """Class ``cls``'s top ``units`` (by ``order``: "weight" w_ck or "contribution"), one row
    each: its top ``images`` dataset images (by the unit's spatial max, from ``stats``) with
    the unit's segmentation-style mask (upsampled f_k above its dataset quantile at ``level``,
    outside dimmed, outlined). Rows are labelled with the unit id, its weight and, given a
    ``dissection``, its concept and IoU. ``show="map"`` draws the unit's activation over each
    image instead (divided by the unit's dataset maximum; mask outlined), with a colour bar.

    ``stats`` and ``dataset`` belong together: the UnitStats of ``camviz.scan(net,
    dataset)`` (they keep dataset indices, not pixels). Runs the network once on the images
    shown. Tiles are axes labelled "unit"; ``ax.images[-1]`` is the mask (or the map).

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> from camviz.scan import scan
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> data = [torch.rand(3, 8, 8) for _ in range(2)]
        >>> st = scan(net, data, cache=False, progress=False)
        >>> class_units(net, st, data, 1, units=1, images=2, show="map").axes[-1].get_label()
        '<colorbar>'
    """
    if show not in ("mask", "map"):
        raise CamvizError(f"show must be 'mask' or 'map', got {show!r}")
    if len(dataset) == 0:
        raise CamvizError("the dataset is empty: give the dataset that was scanned "
                          "(stats = camviz.scan(net, dataset))")
    if stats.num_images != len(dataset):
        raise CamvizError(f"the stats were scanned over {stats.num_images} images but the "
                          f"dataset has {len(dataset)}: give the dataset that was scanned")
    c = class_index(net.classes, cls)
    ids, weights = rank_units(net, stats, c, units, order)
    tops = [stats.top_images(u, images) for u in ids]
    flat = [int(i) for idx, _ in tops for i in idx.tolist()]
    res = run_items(net, dataset, flat)
    shown = res.images()
    cols = max(len(idx) for idx, _ in tops)
    fig, axes = panel_grid(width, len(ids), cols, title_lines=0, left=0.85,
                           cbar=show == "map", extra=text_height(1))
    start = 0
    for r, (unit, (idx, val)) in enumerate(zip(ids, tops, strict=True)):
        part = res.select(slice(start, start + len(idx)))
        masks = as_numpy(unit_masks(part, stats, [unit], level=level)[:, 0])
        if show == "map":
            top = float(val[0]) if len(val) and float(val[0]) > 0 else 1.0
            maps = as_numpy((part.unit_maps([unit], size="input")[:, 0] / top).clamp(0, 1))
        for j in range(cols):
            ax = axes[r, j]
            if j >= len(idx):
                ax.set_visible(False)
                continue
            if show == "map":
                map_panel(ax, shown[start + j], maps[j], cmap, 0.6, label="unit")
                outline(ax, masks[j], MASK_COLOR)
            else:
                mask_panel(ax, shown[start + j], masks[j])
        row_label(axes[r, 0], _row_text(unit, weights[r], dissection))
        start += len(idx)
    how = "weight w_ck" if order == "weight" else "mean contribution"
    fig.suptitle(f"{net.classes[c]}: top units by {how}")
    if show == "map":
        colorbar(fig, axes, cmap, f"{UNIT_LABEL} / its dataset max")
    return fig

