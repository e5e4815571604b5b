"""Pictures of units for people (PIL): a unit's mask on an image, a class's top units on one
image, and galleries of a unit's (or a class's units') top dataset images, masked the Network
Dissection way (inside as is, outside dimmed, outlined).

Example:
    >>> import numpy as np
    >>> img = np.full((4, 4, 3), 200, np.uint8); m = np.zeros((4, 4), bool); m[1:3, 1:3] = 1
    >>> show_mask(img, m)[0, 0].tolist()
    [70, 70, 70]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from camviz.datasets import collate
from camviz.errors import CamvizError
from camviz.render import dim_outside, font, grid, outline
from camviz.result import CamResult
from camviz.units import class_index, class_units, threshold_source, unit_masks
from camviz.unitstats import UnitStats

if TYPE_CHECKING:
    from camviz.dissect import Dissection
    from camviz.gapnet import GapNet

__all__ = ["OUTLINE_COLOR", "caption", "show_mask", "units_on_image", "masked_top_images",
           "run_items", "unit_gallery", "class_gallery"]

OUTLINE_COLOR = (255, 255, 0)


def show_mask(
    image: np.ndarray, mask: Any, keep: float = 0.35, color: Sequence[int] = OUTLINE_COLOR
) -> np.ndarray:
    """A unit mask shown on its image: inside as is, outside dimmed to ``keep``, outlined.

    Example:
        >>> img = np.full((4, 4, 3), 200, np.uint8); m = np.zeros((4, 4), bool); m[1:3, 1:3] = 1
        >>> out = show_mask(img, m)
        >>> out[0, 0].tolist(), out[1, 1].tolist()
        ([70, 70, 70], [255, 255, 0])
    """
    msk = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return outline(dim_outside(image, msk, keep=keep), msk, color=color)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def units_on_image(
    res: CamResult,
    stats: UnitStats | torch.Tensor | str,
    cls: int | str,
    k: int = 4,
    index: int = 0,
    level: float | None = None,
    order: str = "weight",
) -> Image.Image:
    """Panel: the top-``k`` units of class ``cls`` masked on image ``index`` of ``res``, ranked
    by w_ck (``order="weight"``) or by their contribution to this image's logit
    (``"contribution"``: the units that build this map).

    Each tile is captioned with the unit id, its weight and its share of logit - bias; a line
    under the panel says where the thresholds come from (``stats``: a scan's UnitStats, or
    ``"image"`` for per-image quantiles, see :func:`camviz.units.unit_masks`).

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> st = UnitStats.empty(4, net.classes); st.quantiles.update(torch.rand(100, 4))
        >>> units_on_image(net.run(torch.rand(1, 3, 16, 16)), st, 0, k=2).size[0] > 32
        True
    """
    c = class_index(res.classes, cls)
    u = res.select(index).units(c, k=k, order=order)
    masks = unit_masks(res.select(index), stats, u.ids, level=level)[0]
    img = res.images()[index]
    tiles, labels = [img], [f"{res.classes[c]}"]
    for j in range(u.ids.shape[1]):
        unit = int(u.ids[0, j])
        tiles.append(show_mask(img, masks[j]))
        share = float(u.share[0, j])
        labels.append(f"u{unit} w{_fmt(float(u.weights[0, j]))} {share:+.0%}")
    return caption(grid(tiles, labels, cols=len(tiles)),
                   f"unit masks: {threshold_source(stats, level)}")


def caption(panel: Image.Image, text: str, height: int = 16) -> Image.Image:
    """``panel`` with a line of text under it (cut to the panel's width).

    Example:
        >>> caption(Image.new("RGB", (40, 10)), "hello").size
        (40, 26)
    """
    out = Image.new("RGB", (panel.width, panel.height + height), (255, 255, 255))
    out.paste(panel, (0, 0))
    draw = ImageDraw.Draw(out)
    fnt = font(max(8, height - 4))
    while len(text) > 3 and draw.textlength(text, font=fnt) > panel.width - 8:
        text = text[:-2] + "…"
    draw.text((4, panel.height + 1), text, fill=(0, 0, 0), font=fnt)
    return out


def run_items(net: GapNet, dataset: Any, indices: Sequence[int]) -> CamResult:
    """One pass of ``net`` over the dataset items at ``indices`` (items as ``camviz.scan``
    takes them), collated with the network's transform.

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 2), device="cpu")
        >>> len(run_items(net, [torch.rand(3, 8, 8) for _ in range(3)], [2, 0]))
        2
    """
    batch = collate([dataset[int(i)] for i in indices], getattr(net, "transform", None))
    return net.run(batch["image"].to(net.device))


def masked_top_images(
    net: GapNet, dataset: Any, stats: UnitStats, unit: int, idx: torch.Tensor,
    level: float | None = None,
) -> list[np.ndarray]:
    """Dataset images ``idx`` through the network (one pass), each with unit ``unit``'s mask
    shown (uint8 (H, W, 3) each).

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> from camviz.scan import scan
        >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 2), device="cpu")
        >>> data = [torch.rand(3, 8, 8) for _ in range(3)]
        >>> st = scan(net, data, cache=False, progress=False)
        >>> [t.shape for t in masked_top_images(net, data, st, 0, torch.tensor([2, 0]))]
        [(8, 8, 3), (8, 8, 3)]
    """
    res = run_items(net, dataset, idx.tolist())
    masks = unit_masks(res, stats, [unit], level=level)[:, 0]
    imgs = res.images()
    return [show_mask(imgs[i], masks[i]) for i in range(len(imgs))]


def unit_gallery(
    net: GapNet,
    dataset: Any,
    stats: UnitStats,
    unit: int,
    n: int = 6,
    level: float | None = None,
) -> Image.Image:
    """Panel: unit ``unit``'s top-``n`` dataset images (by spatial max) with its mask shown.

    Runs the network once on those ``n`` images (the scan kept their indices, not pixels).

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> from camviz.scan import scan
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> data = [torch.rand(3, 8, 8) for _ in range(4)]
        >>> st = scan(net, data, cache=False, progress=False)
        >>> unit_gallery(net, data, st, unit=2, n=3).size[1] > 8
        True
    """
    idx, val = stats.top_images(unit, n)
    if idx.numel() == 0:
        raise CamvizError(f"unit {unit} has no top images; was the scan empty?")
    tiles = masked_top_images(net, dataset, stats, unit, idx, level)
    labels = [f"#{int(i)} max {_fmt(float(v))}" for i, v in zip(idx, val, strict=True)]
    return grid(tiles, labels, cols=len(tiles))


def class_gallery(
    net: GapNet,
    dataset: Any,
    stats: UnitStats,
    cls: int | str,
    k: int = 4,
    n: int = 5,
    level: float | None = None,
    dissection: Dissection | None = None,
) -> Image.Image:
    """Panel: one row per top-``k`` unit of class ``cls``, its top-``n`` images masked.

    Rows are captioned with the unit id, its weight w_ck and (given a ``dissection``) its part.

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> from camviz.scan import scan
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> data = [torch.rand(3, 8, 8) for _ in range(4)]
        >>> st = scan(net, data, cache=False, progress=False)
        >>> class_gallery(net, data, st, 0, k=2, n=2).size[1] > 16
        True
    """
    ids, weights = class_units(net, cls, k)
    tiles: list[np.ndarray] = []
    labels: list[str] = []
    for unit, w in zip(ids.tolist(), weights.tolist(), strict=True):
        idx, _ = stats.top_images(unit, n)
        shown = masked_top_images(net, dataset, stats, unit, idx, level)
        tag = f"u{unit} w{_fmt(w)}"
        if dissection is not None and dissection.labels[unit]:
            tag += f" {dissection.labels[unit]}"
        for j in range(n):
            if j < len(shown):
                tiles.append(shown[j])
                labels.append(f"{tag} #{int(idx[j])}" if j == 0 else f"#{int(idx[j])}")
            else:
                tiles.append(np.full_like(tiles[-1], 255))
                labels.append("")
    return grid(tiles, labels, cols=n)
