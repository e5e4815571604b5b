"""Network Dissection of a GAP network's units against part masks (Bau et al., CVPR 2017).

Over a dataset with part masks, each unit's masks (its map upsampled bilinearly to the input,
kept strictly above its scan quantile) are compared with each part's masks: IoU = sum of
intersections / sum of unions over the dataset. A unit is a detector of its best part when
that IoU reaches :data:`IOU_THRESHOLD` (0.04). Items that cannot be read (an image or a part mask)
are reported in ``meta["failed"]`` with their path and skipped; inside a torch.distributed
process group each rank dissects its shard and every rank returns the merged counts (pixel
counts: the same numbers as one process).

Example:
    >>> import torch
    >>> d = Dissection(["disc"], torch.tensor([[5.0]]), torch.tensor([[10.0]]), 0.995)
    >>> d.labels, d.best_iou.tolist()
    (['disc'], [0.5])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from camviz.datasets import Prepared, SkipBad, collate, item_name
from camviz.distributed import Heartbeat, merge_on_all, pack, shard, together, unpack, world
from camviz.errors import DatasetError
from camviz.units import class_units, threshold_masks
from camviz.unitstats import UnitStats, check_match

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


@dataclass
class _Tally:
    """One shard's counts: intersections (K, P), part and unit areas, the part names met."""

    names: list[str]
    inter: torch.Tensor
    part_area: torch.Tensor
    unit_area: torch.Tensor
    seen: int = 0
    failed: list[list[Any]] = field(default_factory=list)

    def grow(self, names: Sequence[str]) -> None:
        new = [n for n in dict.fromkeys(names) if n not in self.names]
        if new:
            self.names += new
            self.inter = torch.cat([self.inter, self.inter.new_zeros(len(self.unit_area),
                                                                     len(new))], 1)
            self.part_area = torch.cat([self.part_area, self.part_area.new_zeros(len(new))])

    def merge(self, other: _Tally) -> _Tally:
        self.grow(other.names)
        cols = torch.tensor([self.names.index(n) for n in other.names], dtype=torch.long)
        dev = self.inter.device
        self.inter[:, cols.to(dev)] += other.inter.to(dev)
        self.part_area[cols.to(dev)] += other.part_area.to(dev)
        self.unit_area += other.unit_area.to(dev)
        self.seen += other.seen
        self.failed += other.failed
        return self

    def to_bytes(self) -> bytes:
        return pack({"inter": self.inter.cpu().numpy(), "part_area": self.part_area.cpu().numpy(),
                     "unit_area": self.unit_area.cpu().numpy(),
                     "info": np.array(json.dumps({"names": self.names, "seen": self.seen,
                                                  "failed": self.failed}))})

    @classmethod
    def from_bytes(cls, data: bytes, device: torch.device) -> _Tally:
        a = unpack(data)
        info = json.loads(str(a["info"]))
        return cls(info["names"], torch.from_numpy(a["inter"]).to(device),
                   torch.from_numpy(a["part_area"]).to(device),
                   torch.from_numpy(a["unit_area"]).to(device), info["seen"], info["failed"])


def _add_batch(t: _Tally, res: Any, part_dicts: list[dict[str, Any]], thresholds: torch.Tensor,
               mask_size: int | tuple[int, int] | None) -> None:
    """Add one batch's unit masks and part masks to the tally."""
    dev, k = thresholds.device, thresholds.shape[0]
    if mask_size is None:
        hw = tuple(res.input_size)
    else:
        hw = (mask_size, mask_size) if isinstance(mask_size, int) else tuple(mask_size)
    t.grow([name for d in part_dicts for name in d])
    b = len(part_dicts)
    gt = torch.zeros(b, len(t.names), hw[0] * hw[1], device=dev)
    for i, d in enumerate(part_dicts):
        for name, m in d.items():
            m = torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m)
            if tuple(m.shape) != tuple(hw):
                m = F.interpolate(m.float()[None, None], size=hw, mode="nearest")[0, 0]
            gt[i, t.names.index(name)] = m.to(dev).reshape(-1).float()
    t.part_area += gt.sum(dim=(0, 2)).double()
    # chunk images so (chunk, K, H*W) floats stay ~64 MB
    step = max(1, int(2**24 // max(1, k * hw[0] * hw[1])))
    for s in range(0, b, step):
        masks = threshold_masks(res.features[s:s + step], thresholds, hw)
        mf = masks.reshape(masks.shape[0], k, -1).float()
        t.unit_area += mf.sum(dim=(0, 2)).double()
        t.inter += torch.bmm(mf, gt[s:s + step].transpose(1, 2)).sum(0).double()
    t.seen += b


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
    distributed: bool = True,
) -> Dissection:
    """IoU of every unit's masks with every part's masks over ``dataset`` (Network Dissection).

    Masks: each unit's map upsampled bilinearly to the input and thresholded at its
    ``stats`` quantile at ``level`` (strictly above). IoU over the dataset = sum of
    intersections / sum of unions (images lacking a part count with an empty part mask).
    Items: dicts with ``"image"`` and ``"parts"`` (see :class:`PartsFolder`); part masks must
    be in the network-input frame. ``parts``: the part vocabulary (default: the dataset's
    ``part_names``, else the names met, in order). ``mask_size``: compare at this size instead of
    the input size (part masks resized nearest), to save memory on large inputs or many parts
    (NetDissect compares at 112 or 56 pixels). ``stats`` must come from a scan of this network
    (:func:`~camviz.unitstats.check_match`). Unreadable items are listed in ``meta["failed"]``.

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
    check_match(stats, net)
    names: list[str] = list(parts or getattr(dataset, "part_names", None) or [])
    dev = net.device
    thresholds = stats.thresholds(level).to(dev)
    k = thresholds.shape[0]
    rank, size = world(distributed)
    items = shard(len(dataset), batch_size, rank, size)
    with together("camviz dissect"):
        t = _Tally(list(names), torch.zeros(k, len(names), dtype=torch.float64, device=dev),
                   torch.zeros(len(names), dtype=torch.float64, device=dev),
                   torch.zeros(k, dtype=torch.float64, device=dev))
        safe = SkipBad(Prepared(dataset, net.transform), describe=partial(item_name, dataset))
        loader = DataLoader(Subset(safe, items), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers,
                            collate_fn=partial(_parts_batch, transform=net.transform))
        bar = _bar(progress, len(items))
        hb = Heartbeat("camviz dissect")
        hb.start(len(loader))
        try:
            for batch in loader:
                t.failed += [list(f) for f in batch["failed"]]
                if "image" in batch:
                    _add_batch(t, net.run(batch["image"].to(dev)), batch["parts"], thresholds,
                               mask_size)
                bar.update(len(batch["failed"]) + len(batch.get("parts", [])))
                hb.batch_done()
        except BaseException:
            hb.failed()
            raise
        finally:
            bar.close()
    if size > 1:
        t = merge_on_all(t, _Tally.to_bytes, partial(_Tally.from_bytes, device=dev),
                         _Tally.merge)
    if t.seen == 0 and t.failed:
        raise DatasetError(f"none of the {len(dataset)} items could be read; first: "
                           f"{t.failed[0][0]}: {t.failed[0][1]}")
    union = t.unit_area[:, None] + t.part_area[None, :] - t.inter
    return Dissection(
        parts=t.names, intersection=t.inter.cpu(), union=union.cpu(),
        level=float(stats.level if level is None else level),
        iou_threshold=float(iou_threshold), num_images=t.seen,
        meta={"unit_area": t.unit_area.cpu().tolist(), "part_area": t.part_area.cpu().tolist(),
              "failed": t.failed},
    )


def _bar(progress: bool, total: int) -> Any:
    from tqdm.auto import tqdm

    rank, size = world()
    desc = "camviz dissect" if size == 1 else f"camviz dissect (rank {rank} of {size})"
    return tqdm(total=total, desc=desc, unit="img", disable=not progress or rank != 0)
