"""Fingerprints: short digests of what made a result, so that caches, checkpoints and statistics
are never used for another model or other data.

* :func:`module_fingerprint`: a module's tree (types and hyper-parameters) and its tensors,
  optionally without one sub-module (a network without its head: its *trunk*);
* :func:`state_version`: a cheap key that changes whenever a tensor of the module is replaced
  or modified in place (PyTorch's version counters), to cache a fingerprint between calls;
* :func:`file_identity`: a file by its absolute path, size and modification time (no read);
* :func:`dataset_fingerprint`: every item of a dataset, cheaply (its files' identities, labels
  and boxes where it has files, else a digest of every item's content) and its preprocessing.

Example:
    >>> from torch import nn
    >>> a = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Linear(2, 2))
    >>> module_fingerprint(a) == module_fingerprint(a), len(module_fingerprint(a))
    (True, 16)
    >>> module_fingerprint(a, skip="1") == module_fingerprint(
    ...     nn.Sequential(a[0], nn.Linear(2, 7)), skip="1")  # same trunk, another head
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

__all__ = ["model_fingerprint", "module_fingerprint", "state_version", "file_identity",
           "tensor_digest", "stable_repr", "dataset_fingerprint", "value_digest"]


def _outside(name: str, skip: str | None) -> bool:
    return skip is None or not (name == skip or name.startswith(skip + "."))


def tensor_digest(h: Any, t: torch.Tensor) -> None:
    """Feed a tensor's shape, dtype and bytes to the hash ``h`` (any device; copied to the CPU).

    Example:
        >>> h = hashlib.sha256(); tensor_digest(h, torch.zeros(2)); len(h.hexdigest())
        64
    """
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    flat = t.detach().contiguous().reshape(-1).cpu()
    h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")


def module_fingerprint(module: nn.Module, skip: str | None = None,
                       extra: Iterable[Any] = ()) -> str:
    """SHA-256 (hex, 16 chars) of ``module``'s tree (each sub-module's name, type and
    ``extra_repr``: kernel sizes, strides, dilations...) and of every parameter and buffer, leaving
    out the sub-module at dotted path ``skip`` (and all under it); ``extra`` (their reprs) is
    hashed too.

    Example:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Conv2d(3, 2, 1))
        >>> fp = module_fingerprint(m); m[0].dilation = (2, 2)
        >>> module_fingerprint(m) != fp
        True
    """
    h = hashlib.sha256()
    for name, sub in module.named_modules():
        if _outside(name, skip):
            h.update(f"{name}:{type(sub).__qualname__}({sub.extra_repr()})\n".encode())
    for name, t in module.state_dict(keep_vars=True).items():
        if _outside(name.rsplit(".", 1)[0] if "." in name else "", skip):
            h.update(name.encode())
            tensor_digest(h, t)
    for e in extra:
        h.update(stable_repr(e).encode())
    return h.hexdigest()[:16]


def stable_repr(obj: Any) -> str:
    """``repr(obj)`` that is the same in every process: functions by their module and name,
    memory addresses (``at 0x7f..``) dropped.

    Example:
        >>> stable_repr(len), stable_repr(lambda x: x)
        ('builtins.len', 'camviz.fingerprints.<lambda>')
    """
    if callable(obj) and hasattr(obj, "__qualname__") and not isinstance(obj, type):
        return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def model_fingerprint(net: Any) -> str:
    """SHA-256 (hex, 16 chars) of the model's architecture (repr), weights and buffers, class
    names, pooling and preprocessing.

    ``net`` is a :class:`camviz.GapNet` (anything with ``model``, ``pool``, ``classes`` and
    ``transform``).

    The digest is cached per ``net`` while its tensors (version counters) and the reprs above
    stay the same, so asking again costs a repr, not a pass over every weight.

    Example:
        >>> from camviz.gapnet import GapNet
        >>> a = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 2), device="cpu")
        >>> model_fingerprint(a) == model_fingerprint(a)
        True
    """
    # the module tree's repr carries the hyper-parameters that weights do not (dilation,
    # padding, stride...), so a changed architecture with same-shaped weights still differs
    head = json.dumps([repr(net.model), net.pool, list(net.classes)])
    key = (state_version(net.model), head, repr(getattr(net, "transform", None)))
    try:
        cached = _MODELS.get(net)
    except TypeError:  # not weak-referenceable: no cache
        cached = None
    if cached is not None and key[0] is not None and cached[0] == key:
        return cached[1]
    h = hashlib.sha256()
    h.update(head.encode())
    for name, t in net.model.state_dict().items():
        h.update(name.encode())
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    tf = getattr(net, "transform", None)
    h.update(repr(tf).encode())
    with contextlib.suppress(TypeError):
        _MODELS[net] = (key, h.hexdigest()[:16])
    return h.hexdigest()[:16]


_MODELS: weakref.WeakKeyDictionary[Any, tuple[Any, str]] = weakref.WeakKeyDictionary()


def state_version(module: nn.Module) -> tuple[tuple[int, int], ...] | None:
    """The identities and version counters of ``module``'s parameters and buffers: equal keys
    mean no tensor was replaced or changed in place since (None when the counters cannot be
    read, e.g. tensors made under ``torch.inference_mode``). Not covered: attributes that are
    not tensors (a changed ``dilation``) and writes through ``tensor.data`` (which PyTorch does
    not count); optimizers, ``load_state_dict`` and in-place ops under ``no_grad`` are seen.

    Example:
        >>> m = nn.Linear(2, 2); v = state_version(m)
        >>> with torch.no_grad():
        ...     _ = m.weight.add_(1)
        >>> state_version(m) == v
        False
    """
    try:
        return tuple((id(t), t._version) for t in (*module.parameters(), *module.buffers()))
    except RuntimeError:  # inference tensors track no version
        return None


def file_identity(path: str | os.PathLike[str]) -> str:
    """A file as ``absolute path|size|mtime_ns`` (one ``stat``, no read), or ``path|missing``.

    Example:
        >>> file_identity("/no/such/file").endswith("|missing")
        True
    """
    p = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(p)
    except OSError:
        return f"{p}|missing"
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


def value_digest(h: Any, value: Any) -> None:
    """Feed any item value to the hash ``h``: tensors and arrays by their bytes, PIL images by
    mode, size and pixels, dicts (sorted keys), lists and tuples element by element, the rest by
    its stable repr.

    Example:
        >>> a, b = hashlib.sha256(), hashlib.sha256()
        >>> value_digest(a, {"image": torch.ones(2), "label": 1})
        >>> value_digest(b, {"label": 1, "image": torch.ones(2)})
        >>> a.hexdigest() == b.hexdigest()
        True
    """
    if isinstance(value, torch.Tensor):
        tensor_digest(h, value)
    elif isinstance(value, np.ndarray):
        tensor_digest(h, torch.from_numpy(np.ascontiguousarray(value)))
    elif hasattr(value, "tobytes") and hasattr(value, "mode") and hasattr(value, "size"):
        h.update(f"PIL:{value.mode}:{value.size}".encode())  # a PIL image
        h.update(value.tobytes())
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            h.update(f"<{k}>".encode())
            value_digest(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(f"[{len(value)}".encode())
        for v in value:
            value_digest(h, v)
    else:
        h.update(stable_repr(value).encode())


def _record_rows(records: Any) -> Iterator[str]:
    for r in records:  # a wsolevaluation metadata record (camviz.datasets.WsolRecord)
        masks = [file_identity(m) for m in getattr(r, "mask_paths", [])]
        ignore = getattr(r, "ignore_path", None)
        ignore = None if ignore is None else file_identity(ignore)
        boxes = np.asarray(getattr(r, "boxes", np.zeros((0, 4))), dtype=np.int64)
        yield (f"{r.image_id}|{file_identity(r.path)}|{r.label}|{getattr(r, 'size', None)}|"
               f"{boxes.tobytes().hex()}|{masks}|{ignore}")


def _file_rows(ds: Any) -> Iterator[str] | None:
    meta = getattr(ds, "meta", None)
    if meta is not None and hasattr(meta, "records"):
        return _record_rows(meta.records)
    paths = getattr(ds, "paths", None)
    if paths is not None:
        labels = getattr(ds, "labels", None)
        labels = [None] * len(paths) if labels is None else labels
        ids = getattr(ds, "image_ids", None)
        parts = getattr(ds, "parts", None)
        return (f"{file_identity(p)}|{lab}|" + (
            str([(name, file_identity(m)) for name, m in parts[ids[i]]])
            if parts is not None and ids is not None else "")
            for i, (p, lab) in enumerate(zip(paths, labels)))
    samples = getattr(ds, "samples", None) or getattr(ds, "imgs", None)
    if samples is not None:  # torchvision's ImageFolder / DatasetFolder: (path, label) pairs
        return (f"{file_identity(p)}|{lab}" for p, lab in samples)
    return None


def _feed_dataset(h: Any, ds: Any, read_items: bool) -> bool:
    own = getattr(ds, "fingerprint", None)
    if own is not None:
        h.update(str(own() if callable(own) else own).encode())
        return True
    if isinstance(ds, Subset):
        h.update(np.asarray(ds.indices, dtype=np.int64).tobytes())
        return _feed_dataset(h, ds.dataset, read_items)
    h.update(f"{type(ds).__module__}.{type(ds).__qualname__}:{len(ds)}".encode())
    h.update(stable_repr(getattr(ds, "transform", None)).encode())  # the preprocessing
    h.update(stable_repr(getattr(ds, "map_size", None)).encode())
    rows = _file_rows(ds)
    if rows is not None:
        for row in rows:
            h.update(row.encode())
            h.update(b"\n")
        return True
    if not read_items:
        return False
    ids = getattr(ds, "image_ids", None) or getattr(ds, "ids", None)
    if ids is not None:
        h.update(repr(list(ids)).encode())
    for i in range(len(ds)):  # no files: every item's content
        try:
            item = ds[i]
        except Exception as err:  # noqa: BLE001 - a bad item is part of what the dataset is
            item = f"unreadable: {type(err).__name__}: {err}"
        value_digest(h, item)
    return True


def dataset_fingerprint(dataset: Any, read_items: bool = True) -> str | None:
    """SHA-256 (hex, 16 chars) of every item of ``dataset``, cheaply, and of its preprocessing.

    * a dataset with its own ``fingerprint`` (a string, or a method returning one): that;
    * a :class:`torch.utils.data.Subset`: its indices and its dataset's fingerprint;
    * datasets of files (camviz's folders and metadata datasets, torchvision's ImageFolder):
      per item the file's absolute path, size and modification time (one ``stat``, no read),
      its label, boxes and mask files, so an image edited in place changes the fingerprint;
    * any other dataset: its ids (``image_ids`` / ``ids``) and a digest of every item's
      content (one read of every item, no network); with ``read_items=False`` such a dataset
      gets None instead (no fingerprint without reading it).

    Always with the class, the length, and the dataset's ``transform`` (its preprocessing).

    Example:
        >>> a, b = [torch.zeros(3, 4, 4)], [torch.ones(3, 4, 4)]
        >>> dataset_fingerprint(a) == dataset_fingerprint(b)
        False
    """
    h = hashlib.sha256()
    return h.hexdigest()[:16] if _feed_dataset(h, dataset, read_items) else None
