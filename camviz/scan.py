"""One pass over a dataset -> :class:`UnitStats`: unit quantiles, top images, class contributions.

``scan(net, dataset)`` runs the network once over the dataset (a DataLoader, batches on the
network's device) and feeds, per batch, the last conv features F (B, K, h, w) to a
:class:`~camviz.stats.RunningQuantile` (every spatial cell of every image), the units' spatial
maxima to a :class:`~camviz.stats.RunningTopK` (top images per unit), and the pooled features to
per-class sums (by label and by prediction). Memory is flat in the dataset's size. The result is
saved to one ``.npz`` file (no pickle) and cached under ``$CAMVIZ_CACHE/scans`` (or
``~/.cache/camviz/scans``) by a fingerprint of the model weights and of the dataset.

Dataset items may be a preprocessed tensor (3, H, W), a tuple/list whose first element is one
(the second, if an int, is the label), or a dict with key ``"image"`` (and optionally
``"label"``). PIL images / arrays are preprocessed with ``net.transform``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from camviz.gapnet import GapNet
    >>> net = GapNet(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Linear(4, 2), device="cpu")
    >>> data = [(torch.rand(3, 16, 16), i % 2) for i in range(10)]
    >>> st = scan(net, data, batch_size=4, cache=False, progress=False)
    >>> st.num_images, st.thresholds().shape, st.top_images(0, 3)[0].shape
    (10, torch.Size([4]), torch.Size([3]))
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from camviz.errors import CamvizError, DatasetError
from camviz.stats import DEFAULT_RESOLUTION, RunningQuantile, RunningTopK

__all__ = ["UnitStats", "scan", "model_fingerprint", "dataset_fingerprint", "scan_cache_dir"]

FORMAT = "camviz.unitstats/1"
DEFAULT_LEVEL = 0.995


def scan_cache_dir() -> Path:
    """Where cached scans live: ``$CAMVIZ_CACHE/scans``, else ``~/.cache/camviz/scans``.

    Example:
        >>> scan_cache_dir().name
        'scans'
    """
    env = os.environ.get("CAMVIZ_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "camviz"
    return base / "scans"


# ---------------------------------------------------------------------------------- fingerprints


def model_fingerprint(net: Any) -> str:
    """SHA-256 (hex, 16 chars) of the model's architecture (repr), weights and buffers, class
    names, pooling and preprocessing.

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> a = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 2), device="cpu")
        >>> model_fingerprint(a) == model_fingerprint(a)
        True
    """
    h = hashlib.sha256()
    # the module tree's repr carries the hyper-parameters that weights do not (dilation,
    # padding, stride...), so a changed architecture with same-shaped weights still differs
    h.update(json.dumps([repr(net.model), net.pool, list(net.classes)]).encode())
    for name, t in net.model.state_dict().items():
        h.update(name.encode())
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    tf = getattr(net, "transform", None)
    h.update(repr(tf).encode())
    return h.hexdigest()[:16]


_ID_ATTRS = ("fingerprint", "image_ids", "paths", "samples", "imgs", "files", "ids")


def dataset_fingerprint(dataset: Any, probes: int = 8) -> str:
    """SHA-256 (hex, 16 chars) of a dataset's length and item identities.

    Hashes the dataset's class and length, its ``root`` folder if it has one, the first of
    ``dataset.fingerprint`` (a string or a method returning one), ``image_ids``, ``paths``,
    ``samples``, ``imgs``, ``files``, ``ids``, and the bytes of ``probes`` items spread evenly
    over the dataset (first and last included), so changed pixels or preprocessing show too.

    Example:
        >>> import torch
        >>> a, b = [torch.zeros(3, 4, 4)], [torch.ones(3, 4, 4)]
        >>> dataset_fingerprint(a) == dataset_fingerprint(b)
        False
    """
    h = hashlib.sha256()
    n = len(dataset)
    h.update(f"{type(dataset).__module__}.{type(dataset).__qualname__}:{n}".encode())
    root = getattr(dataset, "root", None)
    if root is not None:  # two folders may list the same relative ids
        h.update(str(Path(root).resolve()).encode())
    for attr in _ID_ATTRS:
        val = getattr(dataset, attr, None)
        if val is None:
            continue
        if callable(val):
            val = val()
        h.update(attr.encode())
        h.update(repr(list(val) if not isinstance(val, str) else val).encode())
        break
    # and always the bytes of a few items, so that changed pixels or preprocessing show
    for i in sorted({round(j * (n - 1) / max(probes - 1, 1)) for j in range(probes)} if n else []):
        img, label = _split_item(dataset[i])
        arr = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.array(img))
        h.update(str(i).encode())
        h.update(arr.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        h.update(str(label).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------- items


def _split_item(item: Any) -> tuple[Any, int]:
    """(image, label) of one dataset item; label -1 when the item carries none."""
    label: Any = -1
    if isinstance(item, dict):
        if "image" not in item:
            raise DatasetError(
                f"dataset items are dicts without an 'image' key (keys: {sorted(item)}); "
                "give items as a tensor, a tuple (image, label, ...) or a dict with 'image'"
            )
        img = item["image"]
        for key in ("label", "target", "class_index"):
            if key in item and item[key] is not None:
                label = item[key]
                break
    elif isinstance(item, (tuple, list)):
        if not item:
            raise DatasetError(
                "a dataset item is an empty tuple; its first element must be the image"
            )
        img = item[0]
        if len(item) > 1:
            label = item[1]
    else:
        img = item
    if isinstance(label, torch.Tensor):
        label = int(label.item()) if label.numel() == 1 else -1
    elif isinstance(label, (np.integer, int)) and not isinstance(label, bool):
        label = int(label)
    else:
        label = -1
    return img, label


def _collate(items: list[Any], transform: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, labels = [], []
    for item in items:
        img, label = _split_item(item)
        if not isinstance(img, torch.Tensor):
            if transform is None:
                raise DatasetError(
                    f"dataset item image is {type(img).__name__}, not a tensor, and the network "
                    "has no transform; preprocess items to (3, H, W) tensors or give the "
                    "GapNet a transform"
                )
            img = transform(img)
        if img.ndim != 3 or img.shape[0] != 3:
            raise DatasetError(
                f"dataset item image has shape {tuple(img.shape)}; expected a preprocessed "
                "(3, H, W) tensor"
            )
        imgs.append(img)
        labels.append(label)
    sizes = {tuple(t.shape) for t in imgs}
    if len(sizes) > 1:
        raise DatasetError(
            f"dataset items have different sizes {sorted(sizes)}; use a transform with a crop "
            "or exact resize so they form batches"
        )
    return torch.stack(imgs).float(), torch.tensor(labels, dtype=torch.int64)


def make_loader(
    dataset: Dataset | Sequence[Any],
    transform: Any = None,
    batch_size: int = 32,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """The sequential DataLoader ``scan`` uses (items -> (images (B,3,H,W), labels (B,))).

    Example:
        >>> import torch
        >>> x, y = next(iter(make_loader([torch.zeros(3, 2, 2)] * 3, batch_size=2)))
        >>> x.shape, y.tolist()
        (torch.Size([2, 3, 2, 2]), [-1, -1])
    """
    return DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=partial(_collate, transform=transform),
        pin_memory=pin_memory,
        persistent_workers=False,
    )


# ---------------------------------------------------------------------------------- UnitStats


@dataclass
class UnitStats:
    """Dataset-wide statistics of a network's last-conv units (from :func:`scan`).

    ``quantiles``: sketch of every unit's activations (all spatial cells of all images);
    ``top``: per unit the top-N images by spatial max (dataset indices); ``pooled_*``: sums of
    the pooled features over all images, per label class and per predicted class, with counts.

    Example:
        >>> st = UnitStats.empty(units=3, classes=["a", "b"], top_n=2)
        >>> st.num_units, st.num_images
        (3, 0)
    """

    quantiles: RunningQuantile
    top: RunningTopK
    pooled_sum: torch.Tensor  # (K,) float64
    label_sum: torch.Tensor  # (C, K) float64
    label_count: torch.Tensor  # (C,) int64
    pred_sum: torch.Tensor  # (C, K) float64
    pred_count: torch.Tensor  # (C,) int64
    classes: list[str]
    num_images: int = 0
    feature_size: tuple[int, int] = (0, 0)
    input_size: tuple[int, int] = (0, 0)
    weight: torch.Tensor | None = None  # (C, K) head weight at scan time
    bias: torch.Tensor | None = None  # (C,)
    level: float = DEFAULT_LEVEL  # default quantile level of thresholds()
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(
        cls,
        units: int,
        classes: Sequence[str],
        top_n: int = 16,
        resolution: int = DEFAULT_RESOLUTION,
        device: str | torch.device = "cpu",
    ) -> UnitStats:
        """Statistics of no image yet.

        Example:
            >>> UnitStats.empty(4, ["x"]).top.k
            16
        """
        c = len(classes)
        z = partial(torch.zeros, device=device)
        return cls(
            quantiles=RunningQuantile(units, resolution=resolution),
            top=RunningTopK(units, top_n),
            pooled_sum=z(units, dtype=torch.float64),
            label_sum=z(c, units, dtype=torch.float64),
            label_count=z(c, dtype=torch.int64),
            pred_sum=z(c, units, dtype=torch.float64),
            pred_count=z(c, dtype=torch.int64),
            classes=list(classes),
        )

    @property
    def num_units(self) -> int:
        return self.quantiles.channels

    def thresholds(self, level: float | None = None) -> torch.Tensor:
        """Per-unit activation threshold T_k: the dataset quantile at ``level`` (K,).

        ``level`` None: the scan's level (:attr:`level`, 0.995 unless given to :func:`scan`).

        Example:
            >>> st = UnitStats.empty(2, ["a"])
            >>> st.quantiles.update(torch.arange(1000.0)[:, None].repeat(1, 2))
            >>> st.thresholds(0.995).tolist()
            [994.0, 994.0]
        """
        if self.quantiles.count == 0:
            raise CamvizError("these UnitStats saw no image; run camviz.scan(net, dataset) first")
        return self.quantiles.quantile(float(self.level if level is None else level))

    def top_images(self, unit: int, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Dataset indices and spatial-max scores of unit ``unit``'s top images (best first).

        Example:
            >>> st = UnitStats.empty(1, ["a"], top_n=3)
            >>> st.top.update(torch.tensor([[0.1], [0.9], [0.5]]))
            >>> st.top_images(0)[0].tolist()
            [1, 2, 0]
        """
        if self.top.indices is None:
            raise CamvizError("these UnitStats saw no image; run camviz.scan(net, dataset) first")
        if not 0 <= unit < self.num_units:
            raise CamvizError(f"unit {unit} out of range 0..{self.num_units - 1}")
        idx, val = self.top.indices[unit], self.top.values[unit]
        keep = idx >= 0
        idx, val = idx[keep], val[keep]
        if n is not None:
            idx, val = idx[:n], val[:n]
        return idx, val

    def mean_pooled(self, by: str = "all") -> torch.Tensor:
        """Mean pooled features: (K,) over all images, or (C, K) per label / predicted class.

        Classes with no image give NaN rows.

        Example:
            >>> UnitStats.empty(2, ["a"]).mean_pooled("label").shape
            torch.Size([1, 2])
        """
        if by == "all":
            return self.pooled_sum / max(self.num_images, 1)
        if by == "label":
            s, n = self.label_sum, self.label_count
        elif by == "pred":
            s, n = self.pred_sum, self.pred_count
        else:
            raise CamvizError(f"by must be 'all', 'label' or 'pred', got {by!r}")
        return s / n[:, None].to(s.dtype)

    def class_contributions(self, by: str = "label") -> torch.Tensor:
        """Per class c and unit k, the mean contribution w_ck * mean pooled f_k (C, K).

        ``by="label"``: mean over the images labelled c; ``"pred"``: predicted c; ``"all"``:
        over all images. Summed over k (plus the bias) it is the mean logit of c over them.

        Example:
            >>> st = UnitStats.empty(2, ["a"]); st.weight = torch.ones(1, 2)
            >>> st.class_contributions("all").shape
            torch.Size([1, 2])
        """
        if self.weight is None:
            raise CamvizError("these UnitStats carry no head weights; rescan with camviz.scan")
        w = self.weight.to(self.pooled_sum.device, torch.float64)
        pooled = self.mean_pooled(by)
        return (w * (pooled[None] if pooled.ndim == 1 else pooled)).float()

    # ------------------------------------------------------------------ merge
    def merge(self, other: UnitStats) -> UnitStats:
        """Fold in the stats of a disjoint shard (its top-k indices must be global); returns self.

        Example:
            >>> a, b = UnitStats.empty(1, ["a"]), UnitStats.empty(1, ["a"])
            >>> a.merge(b).num_images
            0
        """
        if other.num_units != self.num_units or other.classes != self.classes:
            raise CamvizError(
                "cannot merge UnitStats of different networks (units or classes differ)"
            )
        dev = self.pooled_sum.device
        self.quantiles.merge(other.quantiles)
        self.top.merge(other.top)
        for name in ("pooled_sum", "label_sum", "label_count", "pred_sum", "pred_count"):
            setattr(self, name, getattr(self, name) + getattr(other, name).to(dev))
        self.num_images += other.num_images
        if self.weight is None:
            self.weight, self.bias = other.weight, other.bias
        if self.feature_size == (0, 0):
            self.feature_size, self.input_size = other.feature_size, other.input_size
        return self

    def to(self, device: str | torch.device) -> UnitStats:
        """Move every tensor to ``device``; returns self.

        Example:
            >>> UnitStats.empty(1, ["a"]).to("cpu").pooled_sum.device.type
            'cpu'
        """
        self.quantiles.to(device)
        if self.top.values is not None:
            self.top.values = self.top.values.to(device)
            self.top.indices = self.top.indices.to(device)
        for name in ("pooled_sum", "label_sum", "label_count", "pred_sum", "pred_count"):
            setattr(self, name, getattr(self, name).to(device))
        if self.weight is not None:
            self.weight, self.bias = self.weight.to(device), self.bias.to(device)
        return self

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to one ``.npz`` file (arrays only, metadata as a JSON string; no pickle).

        Written to a temporary file and renamed, so a reader never sees half a file.

        Example:
            >>> import tempfile
            >>> p = UnitStats.empty(2, ["a"]).save(tempfile.mkdtemp() + "/s.npz")
            >>> UnitStats.load(p).num_units
            2
        """
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        for k, v in self.quantiles.state_dict().items():
            arrays[f"quantiles.{k}"] = v.detach().cpu().numpy()
        for k, v in self.top.state_dict().items():
            arrays[f"top.{k}"] = v.detach().cpu().numpy()
        for name in ("pooled_sum", "label_sum", "label_count", "pred_sum", "pred_count"):
            arrays[name] = getattr(self, name).detach().cpu().numpy()
        if self.weight is not None:
            arrays["weight"] = self.weight.detach().float().cpu().numpy()
            arrays["bias"] = self.bias.detach().float().cpu().numpy()
        info = {
            "format": FORMAT,
            "classes": self.classes,
            "num_images": self.num_images,
            "feature_size": list(self.feature_size),
            "input_size": list(self.input_size),
            "level": self.level,
            "meta": self.meta,
        }
        arrays["info"] = np.array(json.dumps(info))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        os.close(fd)
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> UnitStats:
        """Read a file written by :meth:`save` (``allow_pickle=False``) onto ``device``.

        Example:
            >>> UnitStats.load("no/such.npz")
            Traceback (most recent call last):
            ...
            camviz.errors.CamvizError: no unit statistics at no/such.npz; ...
        """
        path = Path(path)
        if not path.is_file():
            raise CamvizError(f"no unit statistics at {path}; create them with camviz.scan "
                              "or `camviz scan --out FILE`")
        try:
            with np.load(path, allow_pickle=False) as z:
                arr = {k: z[k] for k in z.files}
            info = json.loads(str(arr.pop("info")))
        except (OSError, ValueError, KeyError) as err:
            raise CamvizError(f"{path} is not a camviz unit statistics file ({err}); "
                              "rescan with camviz.scan") from err
        if info.get("format") != FORMAT:
            raise CamvizError(f"{path} has format {info.get('format')!r}, expected {FORMAT!r}; "
                              "rescan with camviz.scan")

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        qstate = {k.split(".", 1)[1]: t(v) for k, v in arr.items() if k.startswith("quantiles.")}
        tstate = {k.split(".", 1)[1]: t(v) for k, v in arr.items() if k.startswith("top.")}
        units = int(qstate["meta"][0])
        tmeta = tstate["meta"].tolist()
        return cls(
            quantiles=RunningQuantile(units).load_state_dict(qstate),
            top=RunningTopK(int(tmeta[0]), int(tmeta[1])).load_state_dict(tstate),
            pooled_sum=t(arr["pooled_sum"]),
            label_sum=t(arr["label_sum"]),
            label_count=t(arr["label_count"]),
            pred_sum=t(arr["pred_sum"]),
            pred_count=t(arr["pred_count"]),
            classes=list(info["classes"]),
            num_images=int(info["num_images"]),
            feature_size=tuple(info["feature_size"]),
            input_size=tuple(info["input_size"]),
            weight=t(arr["weight"]) if "weight" in arr else None,
            bias=t(arr["bias"]) if "bias" in arr else None,
            level=float(info.get("level", DEFAULT_LEVEL)),
            meta=dict(info.get("meta", {})),
        )


# ---------------------------------------------------------------------------------- the pass


@torch.no_grad()
def accumulate(stats: UnitStats, res: Any, labels: torch.Tensor, first_index: int) -> None:
    """Feed one batch's :class:`~camviz.result.CamResult` into ``stats`` (used by :func:`scan`).

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 2), device="cpu")
        >>> st = UnitStats.empty(2, net.classes)
        >>> accumulate(st, net.run(torch.rand(3, 3, 4, 4)), torch.tensor([0, 1, -1]), 0)
        >>> st.num_images, st.label_count.tolist()
        (3, [1, 1])
    """
    f = res.features  # (B, K, h, w) float32 on the device
    b, k = f.shape[:2]
    stats.quantiles.update_channels_first(f.transpose(0, 1).reshape(k, -1))  # (K, B*h*w)
    idx = torch.arange(first_index, first_index + b, device=f.device)
    stats.top.update(f.amax(dim=(2, 3)), idx)
    pooled = res.pooled().to(torch.float64)
    dev = stats.pooled_sum.device
    pooled = pooled.to(dev)
    stats.pooled_sum += pooled.sum(0)
    labels = labels.to(dev)
    c = len(stats.classes)
    # scatter-adds with accumulate=True (duplicates add up); labels out of range (-1: no label)
    # add zeros to row 0, so nothing depends on a host sync
    ok = (labels >= 0) & (labels < c)
    idx = torch.where(ok, labels, torch.zeros_like(labels))
    stats.label_sum.index_put_((idx,), pooled * ok[:, None], accumulate=True)
    stats.label_count.index_put_((idx,), ok.to(torch.int64), accumulate=True)
    pred = res.logits.argmax(1).to(dev)
    stats.pred_sum.index_put_((pred,), pooled, accumulate=True)
    stats.pred_count.index_put_((pred,), torch.ones_like(pred), accumulate=True)
    stats.num_images += b
    stats.feature_size = (int(f.shape[2]), int(f.shape[3]))


def scan(
    net: Any,
    dataset: Dataset | Sequence[Any],
    batch_size: int = 32,
    num_workers: int = 0,
    top_n: int = 16,
    level: float = DEFAULT_LEVEL,
    resolution: int = DEFAULT_RESOLUTION,
    cache: bool | str | os.PathLike[str] = True,
    progress: bool = True,
    autocast: str | None = None,
) -> UnitStats:
    """One pass of ``net`` over ``dataset`` collecting :class:`UnitStats` (see module doc).

    ``top_n``: top images kept per unit; ``level``: the default quantile level of the unit
    thresholds (any other level can still be asked of :meth:`UnitStats.thresholds` later: the
    sketch keeps the whole distribution); ``resolution``: the quantile sketch's resolution
    (default: rank error < 1e-3 at 0.995). ``cache``: True for the default cache folder, a folder
    path, or False; a scan of the same weights, dataset and settings is loaded from it instead
    of recomputed.

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 3), device="cpu")
        >>> st = scan(net, [torch.rand(3, 8, 8) for _ in range(5)], cache=False, progress=False)
        >>> st.top_images(1)[0].shape
        torch.Size([5])
    """
    n = len(dataset)
    if n == 0:
        raise DatasetError("the dataset is empty; give scan() at least one item")
    key = None
    target: Path | None = None
    if cache:
        mfp, dfp = model_fingerprint(net), dataset_fingerprint(dataset)
        key = hashlib.sha256(
            json.dumps([FORMAT, mfp, dfp, top_n, resolution, autocast]).encode()
        ).hexdigest()[:24]
        folder = scan_cache_dir() if cache is True else Path(cache)
        target = folder / f"{key}.npz"
        if target.is_file():
            try:
                cached = UnitStats.load(target, device=net.device)
                cached.level = float(level)
                return cached
            except CamvizError:
                pass  # a damaged cache entry is recomputed and replaced
    stats = UnitStats.empty(net.num_units, net.classes, top_n, resolution, device=net.device)
    stats.weight, stats.bias = net.head_weight, net.head_bias
    stats.level = float(level)
    loader = make_loader(dataset, getattr(net, "transform", None), batch_size, num_workers,
                         pin_memory=net.device.type == "cuda")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="camviz scan", unit="img")
    start = time.perf_counter()
    seen = 0
    try:
        for x, labels in loader:
            x = x.to(net.device, non_blocking=True)
            res = net.run(x, autocast=autocast)
            accumulate(stats, res, labels, seen)
            seen += x.shape[0]
            stats.input_size = (int(x.shape[2]), int(x.shape[3]))
            if bar is not None:
                bar.update(x.shape[0])
    finally:
        if bar is not None:
            bar.close()
    stats.meta = {
        "model": model_fingerprint(net) if key is None else mfp,
        "dataset": dataset_fingerprint(dataset) if key is None else dfp,
        "model_repr": repr(net),
        "seconds": round(time.perf_counter() - start, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if target is not None:
        stats.save(target)
    return stats
