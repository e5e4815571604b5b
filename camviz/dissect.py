"""Network Dissection of a GAP network's units against part masks (Bau et al., CVPR 2017).

Over a dataset with part masks, each unit's masks (its map upsampled bilinearly to the input,
kept strictly above its scan quantile) are compared with each part's masks: IoU = sum of
intersections / sum of unions over the dataset. A unit is a detector of its best part when
that IoU reaches :data:`IOU_THRESHOLD` (0.04).

Example:
    >>> import torch
    >>> d = Dissection(["disc"], torch.tensor([[5.0]]), torch.tensor([[10.0]]), 0.995)
    >>> d.labels, d.best_iou.tolist()
    (['disc'], [0.5])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from camviz.datasets import collate
from camviz.errors import DatasetError
from camviz.units import class_units, threshold_masks
from camviz.unitstats import UnitStats

if TYPE_CHECKING:
    from camviz.gapnet import GapNet

__all__ = ["IOU_THRESHOLD", "Dissection", "dissect"]

#: A unit is a detector of its best part when its dataset IoU reaches this (Network Dissection).
IOU_THRESHOLD = 0.04


@dataclass
class Dissection:
    """Dataset IoU of every unit's masks with every part's masks, and the labels it gives.

    ``intersection`` / ``union`` (K, P) are pixel counts summed over the dataset;
    ``iou = intersection / union``; ``labels[k]`` is unit k's best part when its IoU >=
    ``iou_threshold``, else None.

    Example:
        >>> d = Dissection(["disc"], torch.tensor([[5.0]]), torch.tensor([[10.0]]), 0.995)
        >>> d.labels, d.best_iou.tolist()
        (['disc'], [0.5])
    """

    parts: list[str]
    intersection: torch.Tensor
    union: torch.Tensor
    level: float
    iou_threshold: float = IOU_THRESHOLD
    num_images: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def iou(self) -> torch.Tensor:
        """(K, P) IoU per unit and part, float64 (0 where the union is empty)."""
        inter, union = self.intersection.double(), self.union.double()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))

    @property
    def best_part(self) -> torch.Tensor:
        """(K,) index of each unit's best part."""
        return self.iou.argmax(dim=1)

    @property
    def best_iou(self) -> torch.Tensor:
        """(K,) each unit's best IoU."""
        return self.iou.max(dim=1).values

    @property
    def labels(self) -> list[str | None]:
        """Per unit its best part's name when the IoU reaches the threshold, else None."""
        best, iou = self.best_part.tolist(), self.best_iou.tolist()
        return [self.parts[b] if v >= self.iou_threshold else None
                for b, v in zip(best, iou, strict=True)]

    def detectors(self) -> dict[str, list[int]]:
        """Part name -> units labelled with it (best IoU first).

        Example:
            >>> Dissection(["a", "b"], torch.tensor([[1.0, 0], [0, 0]]),
            ...            torch.tensor([[2.0, 2], [2, 2]]), 0.995).detectors()
            {'a': [0], 'b': []}
        """
        out: dict[str, list[int]] = {p: [] for p in self.parts}
        iou = self.best_iou.tolist()
        for k, lab in enumerate(self.labels):
            if lab is not None:
                out[lab].append(k)
        for p in out:
            out[p].sort(key=lambda k: -iou[k])
        return out

    def class_summary(
        self, net: GapNet, k: int = 5, class_parts: dict[str, Sequence[str]] | None = None
    ) -> list[dict[str, Any]]:
        """Per class: its top-``k`` units by w_ck, how many are part detectors, and which parts.

        With ``class_parts`` (class name -> the parts its objects are made of, e.g.
        :meth:`PartsFolder.class_parts`), ``own`` counts the detectors of the class's own parts.

        Example:
            >>> from torch import nn
            >>> from camviz.gapnet import GapNet
            >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 1), device="cpu")
            >>> d = Dissection(["a"], torch.tensor([[1.0], [0.0]]), torch.tensor([[2.0], [2.0]]),
            ...                0.995)
            >>> d.class_summary(net, k=2)[0]["detectors"]
            1
        """
        labels, iou = self.labels, self.best_iou.tolist()
        rows = []
        for c, name in enumerate(net.classes):
            ids, w = class_units(net, c, k)
            units = []
            for unit, wk in zip(ids.tolist(), w.tolist(), strict=True):
                units.append({"unit": unit, "weight": wk, "part": labels[unit],
                              "iou": iou[unit]})
            parts = [u["part"] for u in units if u["part"] is not None]
            row = {"class": name, "units": units, "detectors": len(parts),
                   "parts": sorted(set(parts))}
            if class_parts is not None:
                mine = set(class_parts.get(name, ()))
                row["own"] = sum(p in mine for p in parts)
                row["class_parts"] = sorted(mine)
            rows.append(row)
        return rows

    def table(
        self, net: GapNet, k: int = 5, class_parts: dict[str, Sequence[str]] | None = None
    ) -> str:
        """The per-class summary as a Markdown table.

        Example:
            >>> from torch import nn
            >>> from camviz.gapnet import GapNet
            >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 1), classes=["x"], device="cpu")
            >>> d = Dissection(["a"], torch.ones(2, 1), torch.full((2, 1), 4.0), 0.995)
            >>> print(d.table(net, k=1).splitlines()[2])  # doctest: +ELLIPSIS
            | x | 1/1 | a | u... a (0.250) |
        """
        own = class_parts is not None
        head = f"| class | part detectors in top {k} | parts |"
        head += " of its own parts | its parts |" if own else ""
        lines = [head + " units (part, IoU) |", "| --- " * (6 if own else 4) + "|"]
        for row in self.class_summary(net, k, class_parts):
            units = ", ".join(
                f"u{u['unit']} {u['part'] or '-'} ({u['iou']:.3f})" for u in row["units"]
            )
            line = (f"| {row['class']} | {row['detectors']}/{len(row['units'])} | "
                    f"{', '.join(row['parts']) or '-'} |")
            if own:
                line += f" {row['own']}/{row['detectors']} | {', '.join(row['class_parts'])} |"
            lines.append(f"{line} {units} |")
        return "\n".join(lines)

    def to_dict(
        self, net: GapNet | None = None, k: int = 5,
        class_parts: dict[str, Sequence[str]] | None = None,
    ) -> dict[str, Any]:
        """JSON-ready summary (per unit best part and IoU; per class summary given ``net``).

        Example:
            >>> d = Dissection(["a"], torch.ones(1, 1), torch.full((1, 1), 4.0), 0.995)
            >>> d.to_dict()["units"][0]
            {'unit': 0, 'part': 'a', 'iou': 0.25, 'label': 'a'}
        """
        best, iou = self.best_part.tolist(), self.best_iou.tolist()
        out: dict[str, Any] = {
            "level": self.level, "iou_threshold": self.iou_threshold,
            "num_images": self.num_images, "parts": self.parts,
            "units": [{"unit": u, "part": self.parts[b], "iou": round(v, 4), "label": lab}
                      for u, (b, v, lab) in enumerate(zip(best, iou, self.labels, strict=True))],
            "detectors": {p: len(us) for p, us in self.detectors().items()},
            "meta": self.meta,
        }
        if net is not None:
            out["classes"] = self.class_summary(net, k, class_parts)
        return out


def _parts_batch(items: list[Any], transform: Any = None) -> dict[str, Any]:
    batch = collate(items, transform)
    if "image" in batch and "parts" not in batch:
        raise DatasetError(
            "dissect() needs part masks: give items as dicts with 'image' and 'parts' "
            "({part name: (H, W) bool mask}), e.g. camviz.datasets.PartsFolder(root)"
        )
    return batch


@torch.no_grad()
def dissect(
    net: GapNet,
    dataset: Any,
    stats: UnitStats,
    level: float | None = None,
    iou_threshold: float = IOU_THRESHOLD,
    parts: Sequence[str] | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
    mask_size: int | tuple[int, int] | None = None,
) -> Dissection:
    """IoU of every unit's masks with every part's masks over ``dataset`` (Network Dissection).

    Masks: each unit's map upsampled bilinearly to the input and thresholded at its
    ``stats`` quantile at ``level`` (strictly above). IoU over the dataset = sum of
    intersections / sum of unions (images lacking a part count with an empty part mask).
    Items: dicts with ``"image"`` and ``"parts"`` (see :class:`PartsFolder`); part masks must
    be in the network-input frame. ``parts``: the part vocabulary (default: the dataset's
    ``part_names``, else the names met, in order). ``mask_size``: compare at this size instead of
    the input size (part masks resized nearest), to save memory on large inputs or many parts
    (NetDissect compares at 112 or 56 pixels).

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> from camviz.scan import scan
        >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 2), device="cpu")
        >>> data = [{"image": torch.rand(3, 8, 8), "parts": {"p": torch.ones(8, 8, dtype=bool)}}]
        >>> st = scan(net, data, cache=False, progress=False)
        >>> dissect(net, data, st, progress=False).iou.shape
        torch.Size([2, 1])
    """
    names: list[str] = list(parts or getattr(dataset, "part_names", None) or [])
    thresholds = stats.thresholds(level).to(net.device)
    k = thresholds.shape[0]
    dev = net.device
    inter = torch.zeros(k, len(names), dtype=torch.float64, device=dev)
    part_area = torch.zeros(len(names), dtype=torch.float64, device=dev)
    unit_area = torch.zeros(k, dtype=torch.float64, device=dev)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=partial(_parts_batch, transform=net.transform))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), desc="camviz dissect", unit="img")
    seen = 0
    try:
        for batch in loader:
            if "image" not in batch:
                continue
            x, part_dicts = batch["image"], batch["parts"]
            res = net.run(x.to(dev))
            if mask_size is None:
                hw = tuple(res.input_size)
            else:
                hw = (mask_size, mask_size) if isinstance(mask_size, int) else tuple(mask_size)
            for d in part_dicts:
                for name in d:
                    if name not in names:
                        names.append(name)
            if len(names) > inter.shape[1]:
                extra = len(names) - inter.shape[1]
                inter = torch.cat([inter, inter.new_zeros(k, extra)], 1)
                part_area = torch.cat([part_area, part_area.new_zeros(extra)])
            b = x.shape[0]
            gt = torch.zeros(b, len(names), hw[0] * hw[1], device=dev)
            for i, d in enumerate(part_dicts):
                for name, m in d.items():
                    m = torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m)
                    if tuple(m.shape) != tuple(hw):
                        m = F.interpolate(m.float()[None, None], size=hw, mode="nearest")[0, 0]
                    gt[i, names.index(name)] = m.to(dev).reshape(-1).float()
            part_area += gt.sum(dim=(0, 2)).double()
            # chunk images so (chunk, K, H*W) floats stay ~64 MB
            step = max(1, int(2**24 // max(1, k * hw[0] * hw[1])))
            for s in range(0, b, step):
                masks = threshold_masks(res.features[s:s + step], thresholds, hw)
                mf = masks.reshape(masks.shape[0], k, -1).float()
                unit_area += mf.sum(dim=(0, 2)).double()
                inter += torch.bmm(mf, gt[s:s + step].transpose(1, 2)).sum(0).double()
            seen += b
            if bar is not None:
                bar.update(b)
    finally:
        if bar is not None:
            bar.close()
    union = unit_area[:, None] + part_area[None, :] - inter
    return Dissection(
        parts=names, intersection=inter.cpu(), union=union.cpu(),
        level=float(stats.level if level is None else level),
        iou_threshold=float(iou_threshold), num_images=seen,
        meta={"unit_area": unit_area.cpu().tolist(), "part_area": part_area.cpu().tolist()},
    )
