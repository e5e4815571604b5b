"""Dataset-wide statistics of a network's units (what :func:`camviz.scan` collects).

:class:`UnitStats` holds a quantile sketch of every unit's activations (all spatial cells of
all images), each unit's top images (dataset indices) by spatial maximum, and the pooled
features summed over all images, per label and per predicted class. Everything merges exactly
over disjoint shards and saves to one ``.npz`` file without pickle.

Example:
    >>> st = UnitStats.empty(units=3, classes=["a", "b"], top_n=2)
    >>> st.num_units, st.num_images
    (3, 0)
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camviz.errors import CamvizError
from camviz.files import atomic_open
from camviz.gapnet import GapNet, trunk_fingerprint
from camviz.result import CamResult
from camviz.stats import DEFAULT_RESOLUTION, RunningQuantile, RunningTopK

__all__ = ["FORMAT", "DEFAULT_LEVEL", "UnitStats", "state_arrays", "from_state_arrays",
           "check_match"]

FORMAT = "camviz.unitstats/2"
#: The Network Dissection quantile level of unit thresholds.
DEFAULT_LEVEL = 0.995
_SUMS = ("pooled_sum", "label_sum", "label_count", "pred_sum", "pred_count")


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
        mine, theirs = self.meta.get("trunk"), other.meta.get("trunk")
        if other.num_units != self.num_units or other.classes != self.classes or (
                mine is not None and theirs is not None and mine != theirs):
            raise CamvizError("cannot merge UnitStats of different networks (units, classes or "
                              f"trunk fingerprints {mine} / {theirs} differ): scan every shard "
                              "with the same network")
        dev = self.pooled_sum.device
        self.quantiles.merge(other.quantiles)
        self.top.merge(other.top)
        for name in _SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name).to(dev))
        self.num_images += other.num_images
        if self.weight is None:
            self.weight, self.bias = other.weight, other.bias
        if self.feature_size == (0, 0):
            self.feature_size, self.input_size = other.feature_size, other.input_size
        if mine is None and theirs is not None:
            self.meta["trunk"] = theirs
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
        for name in _SUMS:
            setattr(self, name, getattr(self, name).to(device))
        if self.weight is not None:
            self.weight, self.bias = self.weight.to(device), self.bias.to(device)
        return self

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to one ``.npz`` file (arrays only, metadata as a JSON string; no pickle),
        atomically: a reader never sees half a file.

        Example:
            >>> import tempfile
            >>> p = UnitStats.empty(2, ["a"]).save(tempfile.mkdtemp() + "/s.npz")
            >>> UnitStats.load(p).num_units
            2
        """
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **state_arrays(self))
        return Path(path)

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
            z = np.load(path, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("one array, not an .npz archive")
            with z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
                NotImplementedError) as err:
            raise CamvizError(f"{path} is not a camviz unit statistics file of this version "
                              f"({type(err).__name__}: {err}); rescan with camviz.scan") from err
        return from_state_arrays(arrays, device, where=str(path))


def state_arrays(stats: UnitStats) -> dict[str, np.ndarray]:
    """Everything a :class:`UnitStats` holds as numpy arrays, metadata as one JSON string
    (``"info"``): what :meth:`UnitStats.save` writes and ranks of a sharded scan exchange.

    Example:
        >>> sorted(state_arrays(UnitStats.empty(1, ["a"])))[:3]
        ['info', 'label_count', 'label_sum']
    """
    arrays: dict[str, np.ndarray] = {}
    for k, v in stats.quantiles.state_dict().items():
        arrays[f"quantiles.{k}"] = v.detach().cpu().numpy()
    for k, v in stats.top.state_dict().items():
        arrays[f"top.{k}"] = v.detach().cpu().numpy()
    for name in _SUMS:
        arrays[name] = getattr(stats, name).detach().cpu().numpy()
    if stats.weight is not None:
        arrays["weight"] = stats.weight.detach().float().cpu().numpy()
        arrays["bias"] = stats.bias.detach().float().cpu().numpy()
    info = {
        "format": FORMAT,
        "classes": stats.classes,
        "num_images": stats.num_images,
        "feature_size": list(stats.feature_size),
        "input_size": list(stats.input_size),
        "level": stats.level,
        "meta": stats.meta,
    }
    arrays["info"] = np.array(json.dumps(info))
    return arrays


class _Invalid(Exception):
    """Why a state is not a camviz statistics state (turned into a CamvizError)."""


def _arr(arr: dict[str, np.ndarray], key: str, kind: str, shape: tuple[int | None, ...]
         ) -> np.ndarray:
    if key not in arr:
        raise _Invalid(f"no {key!r} array")
    a = np.asarray(arr[key])
    ok = {"f": np.issubdtype(a.dtype, np.floating), "i": np.issubdtype(a.dtype, np.integer)}[kind]
    if not ok or a.ndim != len(shape) or any(s is not None and s != d
                                             for s, d in zip(shape, a.shape)):
        want = "float" if kind == "f" else "integer"
        raise _Invalid(f"{key!r} is {a.dtype} {a.shape}, expected {want} {shape}")
    return a


def _finite(a: np.ndarray, key: str) -> None:
    if not np.isfinite(a).all():
        raise _Invalid(f"{key!r} holds NaN or infinite values")


def _int(info: dict[str, Any], key: str) -> int:
    v = info.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise _Invalid(f"{key!r} is {v!r}, not a count")
    return v


def _check_info(info: Any) -> dict[str, Any]:
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        got = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise _Invalid(f"format {got!r}")
    classes = info.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str)
                                                               for c in classes):
        raise _Invalid("'classes' is not a list of class names")
    _int(info, "num_images")
    for key in ("feature_size", "input_size"):
        v = info.get(key)
        if not (isinstance(v, list) and len(v) == 2 and all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)):
            raise _Invalid(f"{key!r} is {v!r}, not two sizes")
    level = info.get("level", DEFAULT_LEVEL)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level <= 1:
        raise _Invalid(f"'level' is {level!r}, not a quantile level in [0, 1]")
    if not isinstance(info.get("meta", {}), dict):
        raise _Invalid("'meta' is not a dict")
    return info


def _check_quantiles(arr: dict[str, np.ndarray]) -> int:
    channels, resolution, _, count = (int(v) for v in _arr(arr, "quantiles.meta", "i", (4,)))
    if channels < 1 or resolution < 16 or count < 0:
        raise _Invalid(f"sketch meta {[channels, resolution, count]} out of range")
    comp = _arr(arr, "quantiles.compactions", "i", (None,))
    if (comp < 0).any():
        raise _Invalid("negative compaction counts")
    if "quantiles.samples" not in arr:
        if count or "quantiles.min" in arr:
            raise _Invalid("a sketch with a count but no samples")
        return channels
    sizes = _arr(arr, "quantiles.sizes", "i", (len(comp),))
    if (sizes < 0).any() or len(sizes) > 62:
        raise _Invalid("bad sketch level sizes")
    samples = _arr(arr, "quantiles.samples", "f", (channels, int(sizes.sum())))
    lo = _arr(arr, "quantiles.min", "f", (channels,))
    hi = _arr(arr, "quantiles.max", "f", (channels,))
    for a, key in ((samples, "quantiles.samples"), (lo, "quantiles.min"), (hi, "quantiles.max")):
        if np.isnan(a).any():
            raise _Invalid(f"{key!r} holds NaN values")
    if (lo > hi).any():
        raise _Invalid("sketch minimum above its maximum")
    # every value fed keeps its weight through compactions: the weights add up to the count
    if sum(int(s) << h for h, s in enumerate(sizes.tolist())) != count:
        raise _Invalid("sketch weights do not add up to its count")
    return channels


def _check_top(arr: dict[str, np.ndarray], units: int, items: int) -> None:
    channels, k, _ = (int(v) for v in _arr(arr, "top.meta", "i", (3,)))
    if channels != units or k < 1:
        raise _Invalid(f"top-k of {channels} channels, k={k}, for {units} units")
    if "top.values" not in arr:
        return
    vals = _arr(arr, "top.values", "f", (units, k))
    idx = _arr(arr, "top.indices", "i", (units, k))
    if np.isnan(vals).any() or (vals[:, 1:] > vals[:, :-1]).any():
        raise _Invalid("top-k scores are NaN or not sorted best first")
    if (idx < -1).any() or (idx >= items).any() or ((idx == -1) != np.isneginf(vals)).any():
        raise _Invalid(f"top-k image indices out of range -1..{items - 1}")


def _check(arr: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    units = _check_quantiles(arr)
    c, n = len(info["classes"]), info["num_images"]
    shapes = {"pooled_sum": ("f", (units,)), "label_sum": ("f", (c, units)),
              "label_count": ("i", (c,)), "pred_sum": ("f", (c, units)), "pred_count": ("i", (c,))}
    for key, (kind, shape) in shapes.items():
        a = _arr(arr, key, kind, shape)
        _finite(a, key) if kind == "f" else None
        if kind == "i" and ((a < 0).any() or a.sum() > n):
            raise _Invalid(f"{key!r} counts more images than the {n} scanned")
    top_meta = _arr(arr, "top.meta", "i", (3,))
    items = info.get("meta", {}).get("items")
    if not isinstance(items, int) or isinstance(items, bool) or items < n:
        items = max(n, int(top_meta[-1]))
    _check_top(arr, units, items)
    if ("weight" in arr) != ("bias" in arr):
        raise _Invalid("a head weight without a bias, or the reverse")
    if "weight" in arr:
        _finite(_arr(arr, "weight", "f", (c, units)), "weight")
        _finite(_arr(arr, "bias", "f", (c,)), "bias")


def from_state_arrays(
    arrays: dict[str, np.ndarray], device: str | torch.device = "cpu", where: str = "the state"
) -> UnitStats:
    """The :class:`UnitStats` that :func:`state_arrays` gave, checked first: missing keys,
    wrong shapes or types, NaN samples, counts or indices out of range raise
    :class:`CamvizError` saying it is not a camviz statistics file of this version.

    Example:
        >>> from_state_arrays(state_arrays(UnitStats.empty(3, ["a"]))).num_units
        3
        >>> from_state_arrays({"info": np.array("{}")})
        Traceback (most recent call last):
        ...
        camviz.errors.CamvizError: the state is not a camviz unit statistics file of this ...
    """
    arr = dict(arrays)
    try:
        raw = arr.pop("info")
        if np.asarray(raw).dtype.kind != "U" or np.asarray(raw).ndim != 0:
            raise _Invalid("'info' is not a JSON string")
        info = _check_info(json.loads(str(raw)))
        _check(arr, info)
        return _build(arr, info, device)
    except (_Invalid, KeyError, ValueError, TypeError, OverflowError, CamvizError) as err:
        raise CamvizError(
            f"{where} is not a camviz unit statistics file of this version ({FORMAT}): {err}; "
            "rescan with camviz.scan or `camviz scan`"
        ) from None


def _build(arr: dict[str, np.ndarray], info: dict[str, Any], device: str | torch.device
           ) -> UnitStats:
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    qstate = {k.split(".", 1)[1]: t(v) for k, v in arr.items() if k.startswith("quantiles.")}
    tstate = {k.split(".", 1)[1]: t(v) for k, v in arr.items() if k.startswith("top.")}
    units = int(qstate["meta"][0])
    tmeta = tstate["meta"].tolist()
    return UnitStats(
        quantiles=RunningQuantile(units, resolution=int(qstate["meta"][1]))
        .load_state_dict(qstate),
        top=RunningTopK(int(tmeta[0]), int(tmeta[1])).load_state_dict(tstate),
        **{name: t(arr[name]) for name in _SUMS},
        classes=list(info["classes"]),
        num_images=int(info["num_images"]),
        feature_size=tuple(info["feature_size"]),
        input_size=tuple(info["input_size"]),
        weight=t(arr["weight"]) if "weight" in arr else None,
        bias=t(arr["bias"]) if "bias" in arr else None,
        level=float(info.get("level", DEFAULT_LEVEL)),
        meta=dict(info.get("meta", {})),
    )


def check_match(stats: Any, source: GapNet | CamResult) -> None:
    """Refuse unit statistics of another network: ``source`` (a GapNet, or the CamResult of
    one of its passes) must have the units the statistics describe, and the trunk fingerprint
    the scan recorded (``stats.meta["trunk"]``; a new head on the same trunk is the same
    network for its units). Statistics that record no trunk (made by hand) are checked by
    their unit count only.

    Example:
        >>> from torch import nn
        >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 2), device="cpu")
        >>> st = UnitStats.empty(2, net.classes); st.meta["trunk"] = "0123456789abcdef"
        >>> check_match(st, net)
        Traceback (most recent call last):
        ...
        camviz.errors.CamvizError: these unit statistics were scanned with another network ...
    """
    if isinstance(source, CamResult):
        units, trunk = int(source.features.shape[1]), source.trunk
    else:
        units, trunk = source.num_units, trunk_fingerprint(source)
    if getattr(stats, "num_units", units) != units:
        raise CamvizError(f"these unit statistics describe {stats.num_units} units, the network "
                          f"has {units}; scan this network: camviz.scan(net, dataset)")
    meta = getattr(stats, "meta", None)
    theirs = meta.get("trunk") if isinstance(meta, dict) else None
    if theirs is not None and trunk is not None and theirs != trunk:
        raise CamvizError(
            f"these unit statistics were scanned with another network (trunk fingerprint "
            f"{theirs}; this network's is {trunk}), so their thresholds and top images are not "
            "this network's units; scan this network: camviz.scan(net, dataset) or `camviz "
            "scan --model ...` (a new head on the same trunk keeps its statistics)"
        )
