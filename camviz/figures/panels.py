"""Class-map figures of one pass: an image's top classes, networks side by side, a view.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from camviz.gapnet import GapNet
    >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 6), device="cpu")
    >>> fig = top_classes(net.run(torch.rand(1, 3, 16, 16)), k=3)
    >>> [ax.get_label() for ax in fig.axes][:4]
    ['input', 'map', 'map', 'map']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from camviz.errors import CamvizError
from camviz.figures.sizes import DEFAULT_CMAP, figure_width
from camviz.figures.style import (
    BOX_COLOR,
    CAM_LABEL,
    MASK_COLOR,
    UNIT_LABEL,
    as_numpy,
    clean,
    colorbar,
    draw_box,
    image_panel,
    map_panel,
    new_figure,
    outline,
    panel_grid,
    row_label,
    styled,
    text_height,
)
from camviz.localize import PAPER_THRESHOLD, boxes
from camviz.localize import mask as cam_mask
from camviz.result import min_max
from camviz.units import class_index, unit_masks


def _one(res: Any, i: int) -> Any:
    if not 0 <= int(i) < len(res):
        raise CamvizError(f"image index {i} out of range: the result holds {len(res)} images")
    return res.select(int(i))


@styled
def top_classes(
    res: Any,
    i: int = 0,
    k: int = 5,
    width: float | str = "page",
    cmap: str = DEFAULT_CMAP,
    alpha: float = 0.5,
) -> Figure:
    """The input and the maps of its top-``k`` classes side by side (the paper's figure of one
    image's top-5), each titled with the class name and probability.

    The maps are ``res.cams(top-k, size="input", normalize=True)`` of image ``i``, over the
    image at opacity ``alpha``; axes labelled "map" hold them (``ax.images[-1]``), in the
    order of the top-k.

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 6), device="cpu")
        >>> fig = top_classes(net.run(torch.rand(2, 3, 16, 16)), i=1, k=2, width="column")
        >>> sum(ax.get_label() == "map" for ax in fig.axes)
        2
    """
    one = _one(res, i)
    top = one.topk(k)
    maps = as_numpy(one.cams(top.indices, size="input", normalize=True)[0])
    image = one.images()[0]
    n = maps.shape[0]
    aspect = min(image.shape[0] / image.shape[1], 1.0)  # a tall photo keeps square cells
    fig, axes = panel_grid(width, 1, n + 1, title_lines=2, aspect=aspect)
    image_panel(axes[0, 0], image, "input")
    for j, (name, p) in enumerate(zip(top.names[0], top.probs[0].tolist(), strict=True)):
        map_panel(axes[0, j + 1], image, maps[j], cmap, alpha, f"{name}\np = {p:.2f}")
    colorbar(fig, axes, cmap, CAM_LABEL)
    return fig


def _named_nets(nets: Mapping[str, Any] | Sequence[Any]) -> list[tuple[str, Any]]:
    pairs = list(nets.items()) if isinstance(nets, Mapping) else [
        (f"net {j + 1}", net) for j, net in enumerate(nets)]
    if not pairs:
        raise CamvizError("compare() needs at least one network")
    return [(str(name), net) for name, net in pairs]


def _runs(net: Any, images: Any, view: str) -> list[Any]:
    """One single-image result per image: in the whole view each photo runs alone (photos of
    different shapes cannot share a batch), else one batch is split."""
    if view == "whole" and not isinstance(images, torch.Tensor):
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        return [net.run([item], view="whole") for item in items]
    res = net.run(images, view=view)
    return [res.select(i) for i in range(len(res))]


@styled
def compare(
    nets: Mapping[str, Any] | Sequence[Any],
    images: Any,
    cls: int | str | None = None,
    width: float | str = "page",
    cmap: str = DEFAULT_CMAP,
    alpha: float = 0.5,
    view: str = "whole",
) -> Figure:
    """The same images through several networks: a row of inputs, then one row of maps per
    network (GAP vs GMP twins, a model before and after a new head).

    ``nets``: {row name: GapNet} or a list (rows "net 1", "net 2", ...). ``images``: what
    ``GapNet.run`` takes (paths, PIL images, arrays, a tensor). ``cls``: a class name or index
    for every map, or None for each network's top-1 class of each image. Each map is that
    network's ``cams(cls, size="input", normalize=True)`` over its own input image; ``view``
    "whole" (each whole photo, as ``net.run(..., view="whole")``) or "crop" (the centre crop).

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> a = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 3), device="cpu")
        >>> b = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 3), device="cpu")
        >>> fig = compare({"A": a, "B": b}, torch.rand(2, 3, 16, 16), cls=1)
        >>> sum(ax.get_label() == "map" for ax in fig.axes)
        4
    """
    pairs = _named_nets(nets)
    rows = [(name, _runs(net, images, view)) for name, net in pairs]
    n = len(rows[0][1])
    fig, axes = panel_grid(width, len(rows) + 1, n, title_lines=1, left=0.5)
    for j, one in enumerate(rows[0][1]):
        image_panel(axes[0, j], one.images()[0])
    row_label(axes[0, 0], "input")
    for r, (name, results) in enumerate(rows, start=1):
        for j, res in enumerate(results):
            if cls is None:
                idx = res.class_index(None)
            else:
                idx = torch.full((1, 1), class_index(res.classes, cls), device=res.device)
            cam = as_numpy(res.cams(idx, size="input", normalize=True)[0, 0])
            title = f"{res.classes[int(idx[0, 0])]} {float(res.probs.gather(1, idx)):.2f}"
            map_panel(axes[r, j], res.images()[0], cam, cmap, alpha, title)
        row_label(axes[r, 0], name)
    colorbar(fig, axes, cmap, CAM_LABEL)
    return fig


def _unit_ids(one: Any, c: int, units: int | Sequence[int] | torch.Tensor | None, order: str
              ) -> torch.Tensor:
    if units is None:
        return torch.zeros(0, dtype=torch.long, device=one.device)
    if isinstance(units, (int, np.integer)):
        return one.units(c, k=int(units), order=order).ids[0] if units > 0 else torch.zeros(
            0, dtype=torch.long, device=one.device)
    ids = torch.as_tensor(list(units) if not isinstance(units, torch.Tensor) else units,
                          dtype=torch.long, device=one.device).reshape(-1)
    k = one.features.shape[1]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= k):
        raise CamvizError(f"unit ids must lie in 0..{k - 1}, got {ids.tolist()}")
    return ids


def _unit_tiles(one: Any, c: int, ids: torch.Tensor, stats: Any, level: float | None,
                threshold: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Unit maps f_k (min-max per tile), their masks and captions, as the widget shows them."""
    up = one.unit_maps(ids, size="input")[0]
    masks = (unit_masks(one, stats, ids, level=level)[0] if stats is not None
             else cam_mask(up, threshold))
    w = one.weight[c]
    pooled = one.pooled()[0]
    total = float((w * pooled).sum())
    captions = []
    for u in ids.tolist():
        share = float(w[u] * pooled[u]) / total if total else float("nan")
        captions.append(f"unit {u}\nw {float(w[u]):.3g} ({share:.0%})")
    return as_numpy(min_max(up)), as_numpy(masks), captions


@styled
def view(
    res: Any,
    cls: int | str | None = None,
    threshold: float = PAPER_THRESHOLD,
    index: int = 0,
    units: int | Sequence[int] | torch.Tensor | None = None,
    stats: Any = None,
    order: str = "weight",
    level: float | None = None,
    alpha: float = 0.5,
    cmap: str = DEFAULT_CMAP,
    box: bool = True,
    mask: bool = True,
    width: float | str = "column",
) -> Figure:
    """The browser's view as a paper figure: one image's class map with its mask outline
    (white) and box (red) at ``threshold``, and a row of unit tiles under it.

    ``cls``: name or index (None: the image's top-1). ``units``: None (no tiles), a count
    (the class's top units by ``order``, "weight" or "contribution" on this image) or unit ids
    (e.g. the widget's ``state["units"]``). A tile is the unit's map f_k, min-max normalised,
    with its mask outlined: above its dataset quantile given ``stats`` (a scan's UnitStats, at
    ``level``), else above ``threshold`` x its max (as the widget does); it is captioned with
    the unit id, its weight w_ck and its share of logit - bias on this image. A widget saves its
    current view with ``save(view(res, cls, threshold, units=state["units"], stats=stats,
    alpha=state["opacity"], cmap=state["cmap"], box=state["box"], mask=state["mask"]), path)``.

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 3), device="cpu")
        >>> fig = view(net.run(torch.rand(1, 3, 16, 16)), cls=2, units=[0, 3])
        >>> [ax.get_label() for ax in fig.axes][:3]
        ['map', 'unit', 'unit']
    """
    one = _one(res, index)
    c = int(one.class_index(None)[0, 0]) if cls is None else class_index(one.classes, cls)
    cam01 = as_numpy(one.cams(c, size="input", normalize=True)[0, 0])
    image = one.images()[0]
    ids = _unit_ids(one, c, units, order)
    n = ids.numel()
    w = figure_width(width)
    main = (w - 0.5) * (0.72 if n else 0.85)
    tile = (w - 0.5) / max(n, 1) - 0.03
    height = main + text_height(1) + (tile + text_height(2) if n else 0.0) + 0.08
    fig = new_figure(w, height)
    grid = fig.add_gridspec(2 if n else 1, max(n, 1),
                            height_ratios=[main, tile + text_height(2)] if n else None)
    ax = fig.add_subplot(grid[0, :])
    p = float(one.probs[0, c])
    map_panel(ax, image, cam01, cmap, alpha,
              f"{one.classes[c]}  p = {p:.2f}  threshold {threshold:.2f}")
    if mask:
        outline(ax, cam_mask(cam01, threshold), MASK_COLOR)
    bb = boxes(cam01, threshold)
    if box and len(bb):
        draw_box(ax, bb[0], BOX_COLOR)
    tile_axes = []
    if n:
        maps, masks, captions = _unit_tiles(one, c, ids, stats, level, threshold)
        for j in range(n):
            t_ax = fig.add_subplot(grid[1, j])
            map_panel(t_ax, image, maps[j], cmap, alpha, captions[j], label="unit")
            outline(t_ax, masks[j], MASK_COLOR)
            tile_axes.append(t_ax)
    for a in [ax, *tile_axes]:
        clean(a)
    colorbar(fig, [ax, *tile_axes], cmap, f"{CAM_LABEL} / {UNIT_LABEL}" if n else CAM_LABEL)
    return fig
