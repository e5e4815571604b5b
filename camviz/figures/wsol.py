"""Localization figures: examples with ground-truth and CAM boxes, and the WSOL curves.

Example:
    >>> fig = curves({"A": {"curves": {"cam_thresholds": [0.0, 0.5, 1.0],
    ...     "V2@30": [90, 60, 0], "V2@50": [50, 40, 0], "V2@70": [10, 5, 0]},
    ...     "MaxBoxAccV2": 50.0}})
    >>> len(fig.axes[0].lines)
    3
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from camviz.datasets import WsolDataset, WsolMetadata, collate
from camviz.errors import CamvizError
from camviz.evaluate import eval_transform, gt_maps
from camviz.figures.sizes import DEFAULT_CMAP, figure_width
from camviz.figures.style import (
    BOX_COLOR,
    CAM_LABEL,
    GT_COLOR,
    as_numpy,
    colorbar,
    draw_box,
    map_panel,
    new_figure,
    panel_grid,
    styled,
    text_height,
)
from camviz.localize import PAPER_THRESHOLD, paper_box
from camviz.metrics import box_iou


def _items(ds: WsolDataset, n: int, indices: Sequence[int] | None) -> list[dict[str, Any]]:
    """The first ``n`` items with a box; items that fail to load are reported and skipped."""
    items, failed = [], []
    for i in range(len(ds)) if indices is None else indices:
        if len(items) >= n:
            break
        try:
            item = ds[int(i)]
        except CamvizError as err:
            failed.append(f"{ds.meta[int(i)].image_id}: {err}")
            continue
        if len(item["boxes"]):
            items.append(item)
    if failed:
        warnings.warn(f"localization(): skipped {len(failed)} images that failed to load, "
                      f"e.g. {failed[0]}", stacklevel=3)
    if not items:
        raise CamvizError(f"no image of {ds.meta.metadata_dir} could be shown with a box")
    return items


@styled
def localization(
    net: Any,
    data: WsolMetadata | WsolDataset,
    n: int = 8,
    threshold: float = PAPER_THRESHOLD,
    cols: int = 4,
    indices: Sequence[int] | None = None,
    width: float | str = "page",
    cmap: str = DEFAULT_CMAP,
    alpha: float = 0.5,
) -> Figure:
    """``n`` examples of ``data`` (first ones with a box, or those at ``indices``): the map of
    the ground-truth class, the ground-truth boxes (green, dashed) and the CAM paper's box
    (red, solid: largest region above ``threshold`` x max, ``camviz.localize.paper_box``),
    titled with the class and the IoU of the two.

    The maps are those ``camviz eval`` scores (``camviz.evaluate.gt_maps``: the whole image
    resized to the network input, the map bicubic to it, min-max normalised); ``data`` is a
    wsolevaluation split with boxes (e.g. ``resolve_eval_data("demo:test:100")``).

    Example:
        >>> import camviz
        >>> from camviz.datasets import resolve_metadata as resolve_eval_data
        >>> fig = localization(camviz.load_model("demo"), resolve_eval_data("data/demo-fixture"),
        ...                    n=2)  # doctest: +SKIP
    """
    meta = data.meta if isinstance(data, WsolDataset) else data
    if not isinstance(meta, WsolMetadata):
        raise CamvizError("localization() takes a WsolMetadata or WsolDataset; make one with "
                          "camviz.datasets.resolve_metadata(spec)")
    if len(meta) == 0:
        raise CamvizError(f"{meta.metadata_dir} holds no images: there is nothing to show")
    if not meta.has_boxes:
        raise CamvizError(f"{meta.metadata_dir} has no boxes (localization.txt); give a split "
                          "with ground-truth boxes")
    if n < 1 or cols < 1:
        raise CamvizError(f"n and cols must be >= 1, got n={n}, cols={cols}")
    tf = eval_transform(net)
    h, w = tf.resize  # type: ignore[misc]
    items = _items(WsolDataset(meta, transform=tf, map_size=(w, h)), n, indices)
    batch = collate(items)
    res = net.run(batch["image"])
    maps = as_numpy(gt_maps(res, batch["label"], (h, w)))
    pred = paper_box(maps, threshold)
    shown = res.images()
    cols = min(cols, len(items))
    rows = math.ceil(len(items) / cols)
    fig, axes = panel_grid(width, rows, cols, title_lines=2, extra=text_height(1))
    for j, ax in enumerate(axes.flat):
        if j >= len(items):
            ax.set_visible(False)
            continue
        gt = np.asarray(batch["boxes"][j])
        iou = float(box_iou(pred[j][None], gt).max())
        name = net.classes[int(batch["label"][j])]
        map_panel(ax, shown[j], maps[j], cmap, alpha, f"{name}\nIoU {iou:.2f}")
        for b in gt:
            draw_box(ax, b, GT_COLOR, dashed=True)
        draw_box(ax, pred[j], BOX_COLOR)
    handles = [Line2D([], [], color=GT_COLOR, linestyle="--"), Line2D([], [], color=BOX_COLOR)]
    fig.legend(handles, ["ground truth", f"CAM box ({threshold:.0%} of max)"],
               loc="outside lower center", ncols=2)
    colorbar(fig, axes, cmap, CAM_LABEL)
    return fig


def _named(results: Mapping[str, Any] | Sequence[Any]) -> list[tuple[str, dict[str, Any]]]:
    pairs = list(results.items()) if isinstance(results, Mapping) else [
        (f"net {j + 1}", r) for j, r in enumerate(results)]
    if not pairs:
        raise CamvizError("curves() needs at least one result of camviz.evaluate")
    for name, r in pairs:
        if not isinstance(r, Mapping) or "curves" not in r:
            raise CamvizError(f"the result of {name} has no box accuracy curves: evaluate it on "
                              "data with boxes (camviz.evaluate, or camviz eval --json "
                              "--curves)")
    return [(str(name), dict(r)) for name, r in pairs]


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


IOU_STYLES = ((30, ":"), (50, "-"), (70, "--"))


@styled
def curves(results: Mapping[str, Any] | Sequence[Any], width: float | str = "page") -> Figure:
    """Box accuracy against the CAM threshold at IoU 30/50/70 (left) and pixel
    precision-recall (right, where the data has masks), one colour per network.

    ``results``: {name: ``camviz.evaluate(net, data)``} (or a list of them, named
    "net 1", ...), or the JSON of ``camviz eval --json --curves``. The legend gives each
    network's MaxBoxAccV2 and PxAP. At widths under 5 in the two panels are stacked.

    Example:
        >>> r = {"curves": {"cam_thresholds": [0.0, 1.0], "V2@30": [80, 0], "V2@50": [60, 0],
        ...      "V2@70": [20, 0]}, "PxAP": 40.0, "MaxBoxAccV2": 53.3,
        ...      "pxap_curve": {"precision": [None, 0.5, 0.3], "recall": [0.0, 0.4, 1.0]}}
        >>> [ax.get_label() for ax in curves({"GAP": r}, width="column").axes]
        ['box accuracy', 'precision-recall']
    """
    pairs = _named(results)
    with_pr = [(name, r) for name, r in pairs if r.get("pxap_curve")]
    w = figure_width(width)
    stacked = bool(with_pr) and w < 5
    ncols = 1 if stacked or not with_pr else 2
    nrows = 2 if stacked else 1
    side = (w - 0.1) / ncols
    fig = new_figure(w, nrows * (0.72 * side + text_height(len(pairs) + 3)))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = [f"C{j % 10}" for j in range(len(pairs))]
    ax = axes[0]
    ax.set_label("box accuracy")
    for color, (name, r) in zip(colors, pairs, strict=True):
        cv = r["curves"]
        t = _floats(cv["cam_thresholds"])
        for iou, style in IOU_STYLES:
            ax.plot(t, _floats(cv[f"V2@{iou}"]), color=color, linestyle=style,
                    label=f"{name} IoU {iou}")
    ax.set(xlabel="CAM threshold", ylabel="box accuracy (%)", xlim=(0, 1), ylim=(0, 100))
    handles = [Line2D([], [], color=c) for c in colors]
    labels = [f"{name} (MaxBoxAccV2 {r.get('MaxBoxAccV2', float('nan')):.1f})"
              for name, r in pairs]
    handles += [Line2D([], [], color="0.4", linestyle=s) for _, s in IOU_STYLES]
    labels += [f"IoU {iou}%" for iou, _ in IOU_STYLES]
    ax.legend(handles, labels, loc="upper right")
    if with_pr:
        pr = axes[1]
        pr.set_label("precision-recall")
        for color, (name, r) in zip(colors, pairs, strict=True):
            if r.get("pxap_curve"):
                pc = r["pxap_curve"]
                pr.plot(_floats(pc["recall"]), _floats(pc["precision"]), color=color,
                        label=f"{name} (PxAP {r.get('PxAP') or float('nan'):.1f})")
        pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1))
        pr.legend(loc="upper right")
    return fig
