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
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from camviz.datasets import as_item, collate
from camviz.errors import CamvizError, DatasetError
from camviz.result import CamResult
from camviz.stats import DEFAULT_RESOLUTION
from camviz.unitstats import DEFAULT_LEVEL, FORMAT, UnitStats

if TYPE_CHECKING:
    from camviz.gapnet import GapNet

__all__ = ["UnitStats", "scan", "model_fingerprint", "dataset_fingerprint", "scan_cache_dir"]



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


def model_fingerprint(net: GapNet) -> str:
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
        item = as_item(dataset[i])
        img, label = item["image"], item["label"]
        arr = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.array(img))
        h.update(str(i).encode())
        h.update(arr.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        h.update(str(label).encode())
    return h.hexdigest()[:16]


def make_loader(
    dataset: Dataset | Sequence[Any],
    transform: Any = None,
    batch_size: int = 32,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """The sequential DataLoader of a dataset pass: batches are :func:`camviz.datasets.collate`
    dicts (``"image"`` (B, 3, H, W), ``"label"`` (B,), ...).

    Example:
        >>> import torch
        >>> b = next(iter(make_loader([torch.zeros(3, 2, 2)] * 3, batch_size=2)))
        >>> b["image"].shape, b["label"].tolist()
        (torch.Size([2, 3, 2, 2]), [-1, -1])
    """
    if batch_size < 1:
        raise CamvizError(f"batch_size must be at least 1, got {batch_size}")
    return DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=partial(collate, transform=transform),
        pin_memory=pin_memory,
        persistent_workers=False,
    )


# ---------------------------------------------------------------------------------- the pass


@torch.no_grad()
def accumulate(stats: UnitStats, res: CamResult, labels: torch.Tensor, first_index: int) -> None:
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
    net: GapNet,
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
        for batch in loader:
            if "image" not in batch:
                continue
            x, labels = batch["image"].to(net.device, non_blocking=True), batch["label"]
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
