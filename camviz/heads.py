"""New linear heads on frozen GAP features: the CAM paper's generic localization (section 4).

The global-average-pooled features of a network trained on one task localize objects of classes
it never saw: fit only a new linear classifier on the pooled features of the new images, and
the class maps of that head (``CAM_c = sum_k w_ck f_k``) localize the new classes.

* :func:`pool_features` — one pass over a dataset, keeping what the head reads: the pooled last
  conv features (the network's own pooling, average or max, plus any post-pooling affine that
  the head sees). Cached on disk (safetensors, ``$CAMVIZ_CACHE/features``) by the trunk's
  fingerprint and the dataset's, so refitting with other settings runs no network.
* :func:`~camviz.linearfit.fit_linear` — a linear head on feature vectors, on their device:
  multinomial logistic regression (``loss="softmax"``) or one-vs-rest squared-hinge linear SVM
  (``"svm"``), L2 strength chosen on a held-out part of the data.
* :func:`fit_head` — both, returning ``net.with_head(linear, classes)``: a :class:`GapNet` on
  the same (shared, frozen) trunk whose maps, units, boxes, metrics, widgets and figures are
  those of the new classes. :func:`load_head` puts a saved head (``net.save_head(path)``) back.

Example:
    >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
    >>> data = [(torch.rand(3, 8, 8) + i % 3, i % 3) for i in range(30)]
    >>> fit_head(net, data, cache=False, progress=False).classes
    ['class 0', 'class 1', 'class 2']
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn  # noqa: F401  (the examples)
from torch.utils.data import Dataset, Subset

from camviz.datasets import Numbered, Prepared, SkipBad, item_name, read_classes
from camviz.errors import CamvizError, DatasetError, HeadError
from camviz.files import store_in_cache, writable_cache, write_bytes
from camviz.gapnet import GapNet, trunk_fingerprint
from camviz.headfile import read_head
from camviz.linearfit import DEFAULT_L2, LOSSES, LinearFit, check_labels, fit_linear
from camviz.scan import dataset_fingerprint, make_loader, scan_cache_dir

__all__ = [
    "DEFAULT_L2",
    "LOSSES",
    "HeadFit",
    "LinearFit",
    "Pooled",
    "dataset_classes",
    "features_cache_dir",
    "check_labels",
    "fit_head",
    "fit_head_details",
    "fit_linear",
    "load_head",
    "pool_features",
]

Tensor = torch.Tensor

_FORMAT = 3  # of the feature cache files (2: uint8 items are pixels; 3: row positions, names)


# ------------------------------------------------------------------------------ pooled features


@dataclass
class Pooled:
    """Pooled features of a dataset: ``features`` (N, K) float32 on the network's device (what
    the head reads), ``labels`` (N,) int64 (-1: none), ``classes`` (the dataset's class names, or
    None when it has none), ``failed`` ((item name or path, reason) of the items left out),
    ``index`` ((N,) int64: the dataset position of each row; None if unknown)."""

    features: Tensor
    labels: Tensor
    classes: list[str] | None = None
    failed: list[tuple[Any, str]] = field(default_factory=list)
    index: Tensor | None = None


def features_cache_dir() -> Path:
    """Where cached pooled features live: ``$CAMVIZ_CACHE/features`` (``~/.cache/camviz``).

    Example:
        >>> features_cache_dir().name
        'features'
    """
    return scan_cache_dir().parent / "features"


def dataset_classes(dataset: Any) -> list[str] | None:
    """The class names of a dataset: its ``classes`` (an :class:`~camviz.datasets.ImageFolder`),
    else the ``classes.txt`` of its folder (``index,name`` or one name a line, as the demo world
    and metadata folders have it), looking through ``Subset`` / ``SkipBad``; None if it has none.

    Example:
        >>> from camviz.datasets import resolve_data
        >>> fixture = Path(__file__).parents[1] / "data" / "demo-fixture"
        >>> dataset_classes(resolve_data(str(fixture)))[:3]
        ['house', 'tree', 'sign']
    """
    names = getattr(dataset, "classes", None)
    if isinstance(names, (list, tuple)) and all(isinstance(c, str) for c in names):
        return list(names)
    meta = getattr(dataset, "meta", None)
    for folder in (getattr(dataset, "root", None), getattr(meta, "metadata_dir", None)):
        if folder is not None and (Path(folder) / "classes.txt").is_file():
            return read_classes(Path(folder) / "classes.txt")
    inner = getattr(dataset, "dataset", None)
    return dataset_classes(inner) if inner is not None else None


def _head_input(net: GapNet, pooled: Tensor) -> Tensor:
    """What the head's Linear reads: the pooled features, after a post-pooling LayerNorm's affine
    (the normalisation itself is already in the features, see :class:`GapNet`)."""
    if not net.adapter.norm:
        return pooled
    norm = net.model.get_submodule(net.adapter.norm)
    w, b = getattr(norm, "weight", None), getattr(norm, "bias", None)
    out = pooled * w.float() if w is not None else pooled
    return out + b.float() if b is not None else out


def _data_key(dataset: Any) -> str:
    if isinstance(dataset, Subset):  # which items, not only how many
        inner = _data_key(dataset.dataset)
        return f"subset:{inner}:{hashlib.sha256(repr(list(dataset.indices)).encode()).hexdigest()}"
    return dataset_fingerprint(dataset)


def _cache_file(net: GapNet, dataset: Any, cache: bool | str | os.PathLike[str],
                autocast: str | None) -> Path | None:
    folder = writable_cache(features_cache_dir() if cache is True else Path(cache), "feature")
    if folder is None:
        return None
    key = json.dumps([_FORMAT, trunk_fingerprint(net), _data_key(dataset), net.pool, autocast])
    return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"


def pool_features(
    net: GapNet,
    dataset: Dataset | Sequence[Any],
    batch_size: int = 32,
    num_workers: int = 0,
    cache: bool | str | os.PathLike[str] = True,
    progress: bool = True,
    autocast: str | None = None,
) -> Pooled:
    """One pass of ``net`` over ``dataset``: the pooled features the head reads, with labels.

    Items follow :func:`camviz.datasets.collate`'s convention; an item that cannot be read is
    listed in ``failed`` and left out. ``cache``: True (the default folder,
    :func:`features_cache_dir`), a folder, or False; the same trunk, pooling and dataset load
    from it instead of running the network.

    Example:
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> p = pool_features(net, [(torch.rand(3, 8, 8), i % 2) for i in range(5)],
        ...                   cache=False, progress=False)
        >>> p.features.shape, p.labels.tolist()
        (torch.Size([5, 4]), [0, 1, 0, 1, 0])
    """
    if len(dataset) == 0:
        raise DatasetError("the dataset is empty; give at least one image per class")
    target = _cache_file(net, dataset, cache, autocast) if cache else None
    if target is not None and target.is_file():
        try:
            cached = _load_pooled(target, net.device)
            if len(cached.labels) + len(cached.failed) == len(dataset):  # else cut short
                return cached
        except CamvizError:
            pass  # a damaged cache entry is recomputed and replaced
    transform = getattr(net, "transform", None)  # applied per item: a refused image fails alone
    loader = make_loader(SkipBad(Prepared(Numbered(dataset), transform),
                                 describe=partial(item_name, dataset)),
                         transform, batch_size, num_workers, pin_memory=net.device.type == "cuda")
    feats, labels, index, failed = [], [], [], []
    from tqdm.auto import tqdm  # on use: tqdm.auto loads ipywidgets, and import camviz is light

    with torch.inference_mode(), tqdm(total=len(dataset), desc="camviz pool", unit="img",
                                      file=sys.stderr, disable=not progress) as bar:
        for batch in loader:
            failed += [tuple(f) for f in batch["failed"]]
            if "image" in batch:
                res = net.run(batch["image"].to(net.device, non_blocking=True), autocast=autocast)
                feats.append(_head_input(net, res.pooled()))
                labels.append(batch["label"])
                index.append(torch.as_tensor(batch["position"], dtype=torch.int64))
            bar.update(len(batch.get("label", [])) + len(batch["failed"]))
    if not feats:
        raise DatasetError(f"no item of the dataset could be read ({len(failed)} failed, e.g. "
                           f"{failed[0] if failed else None})")
    out = Pooled(torch.cat(feats).clone(), torch.cat(labels), dataset_classes(dataset), failed,
                 torch.cat(index))
    if target is not None:
        store_in_cache(lambda t: _save_pooled(out, t), target, "feature")
    return out


def _save_pooled(p: Pooled, target: Path) -> None:
    meta = {"format": str(_FORMAT), "classes": json.dumps(p.classes),
            "failed": json.dumps([[str(a), str(b)] for a, b in p.failed])}
    tensors = {"features": p.features.detach().float().cpu().contiguous(),
               "labels": p.labels.cpu().contiguous()}
    if p.index is not None:
        tensors["index"] = p.index.cpu().contiguous()
    write_bytes(target, st_save(tensors, metadata=meta))


def _load_pooled(path: Path, device: torch.device) -> Pooled:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            x, y = f.get_tensor("features"), f.get_tensor("labels")
            stored = set(f.keys())
            index = f.get_tensor("index") if "index" in stored else None
        classes, failed = json.loads(meta["classes"]), json.loads(meta["failed"])
    except (OSError, SafetensorError, KeyError, ValueError) as err:
        raise CamvizError(f"damaged feature cache {path}: {err}") from None
    if meta.get("format") != str(_FORMAT) or x.ndim != 2 or y.shape != (x.shape[0],) or (
            index is not None and index.shape != y.shape):
        raise CamvizError(f"damaged feature cache {path}")
    return Pooled(x.to(device), y.to(torch.int64), classes, [tuple(f) for f in failed],
                  None if index is None else index.to(torch.int64))


def _labelled(pooled: Pooled, c: int, dataset: Any) -> Pooled:
    """The rows of ``pooled`` whose label is one of the ``c`` classes; the others (no label,
    or a label outside ``0..c-1``) are added to ``failed`` by item name and left out. All rows
    unlabelled, or none left, is a :class:`DatasetError` (nothing to fit)."""
    y = pooled.labels
    keep = (y >= 0) & (y < c)
    if bool(keep.all()) or not bool((y >= 0).any()):
        return pooled  # all usable, or no labels at all (check_labels says so)
    pos = pooled.index.tolist() if pooled.index is not None else list(range(len(y)))
    bad = [(item_name(dataset, pos[j]),
            "no class label; left out of the fit" if int(y[j]) < 0 else
            f"label {int(y[j])} is outside 0..{c - 1} (the {c} classes); left out of the fit")
           for j in (~keep).nonzero().flatten().tolist()]
    failed = pooled.failed + bad
    if not bool(keep.any()):
        raise DatasetError(f"no item has a label in 0..{c - 1} (the {c} classes): {len(bad)} "
                           f"left out, e.g. {bad[0][0]}: {bad[0][1]}; label the images with "
                           "the classes")
    k = keep.nonzero().flatten()
    return Pooled(pooled.features[k.to(pooled.features.device)], y[k], pooled.classes, failed,
                  None if pooled.index is None else pooled.index[k])


# ------------------------------------------------------------------------------ heads on nets


@dataclass
class HeadFit:
    """What :func:`fit_head_details` returns: the new ``net``, the ``fit`` (:class:`LinearFit`:
    chosen l2, held-out and training accuracy) and the ``pooled`` features it was fitted on
    (``pooled.failed``: the items left out, unreadable or without one of the classes)."""

    net: GapNet
    fit: LinearFit
    pooled: Pooled


def fit_head_details(
    net: GapNet,
    dataset: Dataset | Sequence[Any],
    loss: str = "softmax",
    l2: float | Sequence[float] | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    cache: bool | str | os.PathLike[str] = True,
    progress: bool = True,
    autocast: str | None = None,
) -> HeadFit:
    """:func:`fit_head`, returning the fit and the pooled features with the new net.

    Example:
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> data = [(torch.rand(3, 8, 8) + i % 2, i % 2) for i in range(20)]
        >>> r = fit_head_details(net, data, l2=1e-3, cache=False, progress=False)
        >>> r.fit.l2, r.fit.n_holdout, r.pooled.features.shape
        (0.001, 4, torch.Size([20, 4]))
    """
    pooled = pool_features(net, dataset, batch_size, num_workers, cache, progress, autocast)
    names = list(classes) if classes is not None else pooled.classes
    c = len(names) if names is not None else int(pooled.labels.max()) + 1
    pooled = _labelled(pooled, c, dataset)  # items without one of the c labels: reported, left out
    fit = fit_linear(pooled.features, pooled.labels, c, loss, l2, holdout, seed,
                     classes=names, progress=progress)
    return HeadFit(net.with_head(fit.linear(), names), fit, pooled)


def fit_head(
    net: GapNet,
    dataset: Dataset | Sequence[Any],
    loss: str = "softmax",
    l2: float | Sequence[float] | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    cache: bool | str | os.PathLike[str] = True,
    progress: bool = True,
    autocast: str | None = None,
) -> GapNet:
    """A new linear head for ``dataset``'s classes on ``net``'s frozen trunk.

    :func:`pool_features` (cached), then :func:`fit_linear` (``loss``, ``l2``, ``holdout``,
    ``seed``); returns ``net.with_head(linear, classes)``, sharing the trunk. An item that
    cannot be read, has no label or a label outside the classes is reported (by its path, in
    :func:`fit_head_details`'s ``pooled.failed``) and left out; the fit goes on with the rest.
    ``classes``: the class names, by default the dataset's (:func:`dataset_classes`: an
    ImageFolder's folders, a metadata folder's ``classes.txt``), else "class i" for labels
    ``0 .. max``.
    :func:`fit_head_details` also returns the fit (held-out accuracy, chosen ``l2``).

    Example:
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> data = [(torch.rand(3, 8, 8) + i % 3, i % 3) for i in range(30)]
        >>> new = fit_head(net, data, cache=False, progress=False)
        >>> new.classes, new.model.features is net.model.features
        (['class 0', 'class 1', 'class 2'], True)
    """
    return fit_head_details(net, dataset, loss, l2, holdout, seed, classes, batch_size,
                            num_workers, cache, progress, autocast).net


def load_head(net: GapNet, path: str | os.PathLike[str]) -> GapNet:
    """``net`` with the head saved at ``path`` (by ``GapNet.save_head`` or ``camviz fit-head``):
    a new :class:`GapNet` sharing ``net``'s trunk, with the head's classes. A head fitted on
    another trunk (other weights, architecture or preprocessing) or with another pooling is
    refused with :class:`~camviz.errors.HeadError`.

    Example:
        >>> import tempfile, pathlib
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), classes=["a", "b"], device="cpu")
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "head.safetensors"
        >>> net.save_head(p)
        >>> load_head(net, p).classes
        ['a', 'b']
    """
    head = read_head(path)
    if head.pool != net.pool:
        raise HeadError(f"{path} was fitted on {head.pool}-pooled features, but this network "
                        f"pools with {net.pool}; load it onto the network it was fitted on")
    mine = trunk_fingerprint(net)
    if head.trunk != mine:
        raise HeadError(f"{path} was fitted on another trunk (fingerprint {head.trunk}), not "
                        f"this network's ({mine}); load it onto the model, weights and "
                        "preprocessing it was fitted with, or fit a new head (camviz fit-head)")
    return net.with_head(head.linear(), head.classes)
