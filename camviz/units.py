"""Class-specific units (CAM paper, sec. 5): top units of a class, unit masks, galleries, dissect.

A class map is the sum of its units' maps ``w_ck f_k``. A unit is shown the Network Dissection
way: its raw map ``f_k`` is upsampled bilinearly to the image and thresholded at its dataset-wide
quantile ``T_k`` (from :func:`camviz.scan`, level 0.995 by default): mask = value > T_k,
strictly, so a unit whose spatial max is <= T_k has an empty mask (bilinear upsampling never
exceeds the max of the cells). Dissection measures, over a dataset with part masks, the IoU of
each unit's masks with each part's, and labels a unit with its best part when IoU >= 0.04.

Example:
    >>> import torch
    >>> maps = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])          # one image, one unit, 2 x 2
    >>> threshold_masks(maps, torch.tensor([2.0]), size=None)[0, 0].tolist()
    [[False, False], [False, True]]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from camviz.errors import CamvizError, DatasetError, UnsafePath
from camviz.scan import UnitStats, _split_item

__all__ = [
    "class_units",
    "threshold_masks",
    "unit_masks",
    "show_mask",
    "units_on_image",
    "unit_gallery",
    "class_gallery",
    "PartsFolder",
    "Dissection",
    "dissect",
    "IOU_THRESHOLD",
]

#: A unit is a detector of its best part when its dataset IoU reaches this (Network Dissection).
IOU_THRESHOLD = 0.04
OUTLINE_COLOR = (255, 255, 0)


# ---------------------------------------------------------------------------------- ranking


def _class_index(classes: Sequence[str], cls: int | str) -> int:
    if isinstance(cls, str):
        if cls not in classes:
            raise CamvizError(f"unknown class {cls!r}; classes are {list(classes)[:20]}...")
        return list(classes).index(cls)
    c = int(cls)
    if not 0 <= c < len(classes):
        raise CamvizError(f"class index {c} out of range 0..{len(classes) - 1}")
    return c


def class_units(net: Any, cls: int | str, k: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
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
    c = _class_index(net.classes, cls)
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


def _thresholds(stats: UnitStats | torch.Tensor, level: float | None) -> torch.Tensor:
    return stats if isinstance(stats, torch.Tensor) else stats.thresholds(level)


def unit_masks(
    res: Any,
    stats: UnitStats | torch.Tensor,
    units: Sequence[int] | torch.Tensor,
    level: float | None = None,
    size: str | tuple[int, int] | None = "input",
) -> torch.Tensor:
    """Masks of ``units`` on the images of a :class:`~camviz.result.CamResult` (B, n, H, W) bool.

    ``stats``: the :class:`UnitStats` of a scan (thresholds at ``level``) or thresholds (K,)
    directly. ``units``: ids (n,) shared by all images, or (B, n) per image (e.g.
    ``res.units(c).ids``). ``size``: "input" (the network input), None (feature cells) or (H, W).

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> res = net.run(torch.rand(2, 3, 8, 8))
        >>> unit_masks(res, torch.zeros(4), [0, 3]).shape
        torch.Size([2, 2, 8, 8])
    """
    ids = torch.as_tensor(units, device=res.device, dtype=torch.long)
    t_all = _thresholds(stats, level).to(res.device)
    if t_all.shape[0] != res.features.shape[1]:
        raise CamvizError(
            f"{t_all.shape[0]} thresholds for a network of {res.features.shape[1]} units; "
            "use the UnitStats of a scan of this network"
        )
    maps = res.unit_maps(ids)  # (B, n, h, w) raw f_k
    t = t_all[ids]
    hw = res.input_size if size == "input" else size
    return threshold_masks(maps, t, None if hw is None else tuple(hw))


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
    from camviz.render import dim_outside, outline  # render sits below units in the data flow

    msk = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return outline(dim_outside(image, msk, keep=keep), msk, color=color)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def grid(*args: Any, **kwargs: Any) -> Image.Image:
    """camviz.render.grid, imported on use (render sits below units in the data flow)."""
    from camviz.render import grid as _grid

    return _grid(*args, **kwargs)


def units_on_image(
    res: Any,
    stats: UnitStats,
    cls: int | str,
    k: int = 4,
    index: int = 0,
    level: float | None = None,
) -> Image.Image:
    """Panel: the top-``k`` units of class ``cls`` (by w_ck) masked on image ``index`` of ``res``.

    Each tile is captioned with the unit id, its weight and its share of logit - bias.

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> st = UnitStats.empty(4, net.classes); st.quantiles.update(torch.rand(100, 4))
        >>> units_on_image(net.run(torch.rand(1, 3, 16, 16)), st, 0, k=2).size[0] > 32
        True
    """
    c = _class_index(res.classes, cls)
    u = res.select(index).units(c, k=k, order="weight")
    masks = unit_masks(res.select(index), stats, u.ids, level=level)[0]
    img = res.images()[index]
    tiles, labels = [img], [f"{res.classes[c]}"]
    for j in range(u.ids.shape[1]):
        unit = int(u.ids[0, j])
        tiles.append(show_mask(img, masks[j]))
        share = float(u.share[0, j])
        labels.append(f"u{unit} w{_fmt(float(u.weights[0, j]))} {share:+.0%}")
    return grid(tiles, labels, cols=len(tiles))


def _batch_images(dataset: Any, indices: Sequence[int], transform: Any) -> torch.Tensor:
    from camviz.scan import _collate

    return _collate([dataset[int(i)] for i in indices], transform)[0]


def _masked_images(
    net: Any, dataset: Any, stats: UnitStats, unit: int, idx: torch.Tensor, level: float | None
) -> list[np.ndarray]:
    """Dataset images ``idx`` through the network, each with unit ``unit``'s mask shown."""
    x = _batch_images(dataset, idx.tolist(), getattr(net, "transform", None))
    res = net.run(x.to(net.device))
    masks = unit_masks(res, stats, [unit], level=level)[:, 0]
    imgs = res.images()
    return [show_mask(imgs[i], masks[i]) for i in range(len(imgs))]


def unit_gallery(
    net: Any,
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
    tiles = _masked_images(net, dataset, stats, unit, idx, level)
    labels = [f"#{int(i)} max {_fmt(float(v))}" for i, v in zip(idx, val, strict=True)]
    return grid(tiles, labels, cols=len(tiles))


def class_gallery(
    net: Any,
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
        shown = _masked_images(net, dataset, stats, unit, idx, level)
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


# ---------------------------------------------------------------------------------- parts data


def _safe(root: Path, rel: str) -> Path:
    if not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise UnsafePath(f"path {rel!r} in the metadata of {root} is absolute or empty; paths "
                         "must be relative to the dataset folder")
    p = (root / rel).resolve()
    if not p.is_relative_to(root.resolve()):
        raise UnsafePath(f"path {rel!r} escapes the dataset folder {root}; fix the metadata")
    return p


def _read_csv(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DatasetError(f"missing {path.name} in {path.parent}; a parts dataset needs "
                           "image_ids.txt and parts.txt (the camviz.demo layout)")
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append([c.strip() for c in line.split(",")])
    return rows


class PartsFolder(Dataset):
    """A folder in the camviz.demo / wsolevaluation layout with part masks (``parts.txt``).

    Items are dicts ``{"image": (3, H, W) tensor, "label": int, "parts": {name: (H, W) bool},
    "path": str}``; images go through ``transform`` (a :class:`camviz.images.Preprocess`) and
    part masks through its geometry (resize/crop), so they align with the network input. Every
    path in the metadata must stay under ``root`` (:class:`UnsafePath` otherwise).

    Example:
        >>> PartsFolder("/no/such/folder")
        Traceback (most recent call last):
        ...
        camviz.errors.DatasetError: missing image_ids.txt in /no/such/folder; ...
    """

    def __init__(self, root: str | os.PathLike[str], transform: Any = None) -> None:
        self.root = Path(root)
        self.transform = transform
        self.image_ids = [r[0] for r in _read_csv(self.root / "image_ids.txt")]
        labels_file = self.root / "class_labels.txt"
        labels = {r[0]: int(r[1]) for r in _read_csv(labels_file)} if labels_file.is_file() else {}
        self.labels = [labels.get(i, -1) for i in self.image_ids]
        parts: dict[str, list[tuple[str, str]]] = {i: [] for i in self.image_ids}
        names: dict[str, None] = {}
        for row in _read_csv(self.root / "parts.txt"):
            if len(row) < 3:
                raise DatasetError(f"parts.txt line {row} must be image_path,part_name,mask_path")
            if row[0] not in parts:
                raise DatasetError(f"parts.txt names {row[0]!r}, which is not in image_ids.txt")
            _safe(self.root, row[2])
            parts[row[0]].append((row[1], row[2]))
            names[row[1]] = None
        for i in self.image_ids:
            _safe(self.root, i)
        self.parts = parts
        self.part_names = list(names)
        info = self.root / "split.json"
        if info.is_file():
            declared = json.loads(info.read_text()).get("parts")
            if declared:
                self.part_names = list(dict.fromkeys([*declared, *self.part_names]))

    def __len__(self) -> int:
        return len(self.image_ids)

    def class_parts(
        self, classes: Sequence[str] | None = None, min_fraction: float = 0.5
    ) -> dict[Any, list[str]]:
        """Per class, the parts listed for at least ``min_fraction`` of its images.

        Keys are class names when ``classes`` (index -> name) is given, else class indices.

        Example:
            >>> from camviz.demo import write_split
            >>> import tempfile
            >>> ds = PartsFolder(write_split("test", 4, tempfile.mkdtemp(), progress=False))
            >>> all(set(p) <= set(ds.part_names) for p in ds.class_parts().values())
            True
        """
        seen: dict[int, dict[str, int]] = {}
        count: dict[int, int] = {}
        for img, label in zip(self.image_ids, self.labels, strict=True):
            count[label] = count.get(label, 0) + 1
            for name in dict.fromkeys(n for n, _ in self.parts[img]):
                seen.setdefault(label, {})[name] = seen.setdefault(label, {}).get(name, 0) + 1
        out: dict[Any, list[str]] = {}
        for label in sorted(count):
            if label < 0:
                continue
            names = [n for n, c in seen.get(label, {}).items() if c >= min_fraction * count[label]]
            out[classes[label] if classes is not None else label] = sorted(names)
        return out

    def _geometry(self, mask: np.ndarray) -> torch.Tensor:
        m = torch.from_numpy(mask.astype(np.float32))[None]
        if self.transform is not None and hasattr(self.transform, "geometry"):
            m = self.transform.geometry(m)
        return m[0] > 0.5

    def __getitem__(self, i: int) -> dict[str, Any]:
        rel = self.image_ids[i]
        try:
            img = Image.open(_safe(self.root, rel)).convert("RGB")
        except OSError as err:
            raise DatasetError(f"cannot read image {rel} under {self.root}: {err}") from err
        x = self.transform(img) if self.transform is not None else img
        parts = {}
        for name, mpath in self.parts[rel]:
            m = np.asarray(Image.open(_safe(self.root, mpath)).convert("L")) > 127
            m = self._geometry(m)
            parts[name] = m | parts[name] if name in parts else m
        return {"image": x, "label": self.labels[i], "parts": parts, "path": rel}


# ---------------------------------------------------------------------------------- dissection


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
        self, net: Any, k: int = 5, class_parts: dict[str, Sequence[str]] | None = None
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
        self, net: Any, k: int = 5, class_parts: dict[str, Sequence[str]] | None = None
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
        self, net: Any = None, k: int = 5, class_parts: dict[str, Sequence[str]] | None = None
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


def _collate_parts(items: list[Any], transform: Any = None) -> tuple[torch.Tensor, list[dict]]:
    from camviz.scan import _collate

    parts = []
    for item in items:
        p = item.get("parts") if isinstance(item, dict) else (
            item[-1] if isinstance(item, (tuple, list)) and isinstance(item[-1], dict) else None)
        if p is None:
            raise DatasetError(
                "dissect() needs part masks: give items as dicts with 'image' and 'parts' "
                "({part name: (H, W) bool mask}), e.g. camviz.units.PartsFolder(root)"
            )
        parts.append(p)
    x, _ = _collate([_split_item(i)[0] for i in items], transform)
    return x, parts


@torch.no_grad()
def dissect(
    net: Any,
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
    from functools import partial

    names: list[str] = list(parts or getattr(dataset, "part_names", None) or [])
    thresholds = stats.thresholds(level).to(net.device)
    k = thresholds.shape[0]
    dev = net.device
    inter = torch.zeros(k, len(names), dtype=torch.float64, device=dev)
    part_area = torch.zeros(len(names), dtype=torch.float64, device=dev)
    unit_area = torch.zeros(k, dtype=torch.float64, device=dev)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=partial(_collate_parts, transform=getattr(net, "transform",
                                                                             None)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), desc="camviz dissect", unit="img")
    seen = 0
    try:
        for x, part_dicts in loader:
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
