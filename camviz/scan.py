"""One pass over a dataset -> :class:`UnitStats`: unit quantiles, top images, class contributions.

``scan(net, dataset)`` runs the network once over the dataset (a DataLoader, batches on the
network's device) and feeds, per batch, the last conv features F (B, K, h, w) to a
:class:`~camviz.stats.RunningQuantile` (every spatial cell of every image), the units' spatial
maxima to a :class:`~camviz.stats.RunningTopK` (top images per unit), and the pooled features to
per-class sums (by label and by prediction). Memory is flat in the dataset's size. The result is
saved to one ``.npz`` file (no pickle) and cached under ``$CAMVIZ_CACHE/scans`` (or
``~/.cache/camviz/scans``) by a fingerprint of the model weights and of every dataset item
(:func:`~camviz.fingerprints.dataset_fingerprint`).

Items that cannot be read are reported (``stats.meta["failed"]``: path and reason) and left out;
a label outside the network's classes is reported and the image counted without a label.
Inside a torch.distributed process group each rank scans its shard
(:func:`camviz.distributed.shard`) and every rank returns the merged statistics; with
``checkpoint=FOLDER`` the partial state is written every ``checkpoint_every`` batches and a rerun
with the same arguments resumes from it (:mod:`camviz.checkpoints`).

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
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from camviz.checkpoints import Checkpoint
from camviz.datasets import Numbered, Prepared, SkipBad, collate, item_name
from camviz.distributed import (
    Heartbeat,
    broadcast_bytes,
    merge_on_all,
    pack,
    share,
    together,
    unpack,
    world,
)
from camviz.distributed import shard as shard_of
from camviz.errors import CamvizError, DatasetError
from camviz.files import remove_stale_temps, store_in_cache, writable_cache
from camviz.fingerprints import dataset_fingerprint, model_fingerprint
from camviz.gapnet import trunk_fingerprint
from camviz.result import CamResult
from camviz.stats import DEFAULT_RESOLUTION
from camviz.unitstats import DEFAULT_LEVEL, FORMAT, UnitStats, from_state_arrays, state_arrays

if TYPE_CHECKING:
    from camviz.gapnet import GapNet

__all__ = ["UnitStats", "scan", "model_fingerprint", "dataset_fingerprint", "scan_cache_dir"]

#: Part of every cache key; raised when the same items and network give other statistics
#: (2: uint8 tensor items are pixels through the network's transform, no longer raw values).
CACHE_KEY = 2

#: What a damaged cache entry may raise when read (it is then recomputed).
_DAMAGED = (CamvizError, OSError, ValueError, KeyError, EOFError, IndexError, TypeError)


def scan_cache_dir() -> Path:
    """Where cached scans live: ``$CAMVIZ_CACHE/scans``, else ``~/.cache/camviz/scans``.

    Example:
        >>> scan_cache_dir().name
        'scans'
    """
    env = os.environ.get("CAMVIZ_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "camviz"
    return base / "scans"


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
def accumulate(
    stats: UnitStats, res: CamResult, labels: torch.Tensor, first_index: int | torch.Tensor
) -> None:
    """Feed one batch's :class:`~camviz.result.CamResult` into ``stats`` (used by :func:`scan`).
    ``first_index``: the dataset index of the batch's first image, or the (B,) indices of all.

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
    if isinstance(first_index, torch.Tensor):
        idx = first_index.to(f.device, torch.int64)
    else:
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


def _label_problems(labels: torch.Tensor, positions: list[int], classes: int,
                    name: Any) -> list[list[Any]]:
    bad = ((labels < -1) | (labels >= classes)).nonzero().flatten().tolist()
    return [[name(positions[j]), f"label {int(labels[j])} is outside the network's {classes} "
             "classes (0..{}); counted without a label".format(classes - 1)] for j in bad]


def _scan_shard(net: GapNet, dataset: Any, items: range, stats: UnitStats, autocast: Any,
                batch_size: int, num_workers: int, progress: bool,
                ckpt: Checkpoint | None, every: int) -> UnitStats:
    """Scan ``items`` of ``dataset`` into ``stats``, resuming from and writing ``ckpt``."""
    done, failed = 0, []
    hb = Heartbeat("camviz scan", every or 50)
    try:
        got = ckpt.load() if ckpt is not None else None
        if got is not None:
            stats = from_state_arrays(got[0], net.device, where=str(ckpt.path))
            done, failed = int(got[1]["done"]), list(got[1]["failed"])
    except BaseException:
        hb.start(None)
        raise
    resumed = done
    name = partial(item_name, dataset)
    todo = range(items.start + done, items.stop)
    hb.start(-(-len(todo) // batch_size))
    transform = getattr(net, "transform", None)  # applied per item: a refused image fails alone
    loader = make_loader(Subset(SkipBad(Prepared(Numbered(dataset), transform), describe=name),
                                todo), transform, batch_size, num_workers,
                         pin_memory=net.device.type == "cuda")
    bar = _bar(progress, len(items), done)
    c = len(stats.classes)
    try:
        for b, batch in enumerate(loader):
            failed += [list(f) for f in batch["failed"]]
            n = len(batch["failed"])
            if "image" in batch:
                x, labels = batch["image"].to(net.device, non_blocking=True), batch["label"]
                failed += _label_problems(labels, batch["position"], c, name)
                labels = torch.where((labels >= 0) & (labels < c), labels, -1)
                res = net.run(x, autocast=autocast)
                accumulate(stats, res, labels, torch.as_tensor(batch["position"]))
                stats.input_size = (int(x.shape[2]), int(x.shape[3]))
                n += x.shape[0]
            done += n
            bar.update(n)
            if ckpt is not None and every and (b + 1) % every == 0 and done < len(items):
                stats.meta = {"items": items.stop}  # top-k holds dataset indices up to there
                ckpt.save(state_arrays(stats), {"done": done, "failed": failed})
            hb.batch_done()
    except BaseException:
        hb.failed()
        raise
    finally:
        bar.close()
    stats.meta = {"failed": failed, "items": items.stop, "resumed": resumed}
    return stats


def _bar(progress: bool, total: int, initial: int) -> Any:
    from tqdm.auto import tqdm

    rank, size = world()
    desc = "camviz scan" if size == 1 else f"camviz scan (rank {rank} of {size})"
    return tqdm(total=total, initial=initial, desc=desc, unit="img",
                disable=not progress or rank != 0)


def _read_cache(target: Path, device: Any) -> UnitStats | None:
    remove_stale_temps(target.parent, name=target.name, recursive=False)
    if not target.is_file():
        return None
    try:
        return UnitStats.load(target, device=device)
    except _DAMAGED as err:  # a damaged cache entry is recomputed and replaced
        warnings.warn(f"damaged scan cache entry {target} ({type(err).__name__}: {err}); "
                      "scanning again", RuntimeWarning, stacklevel=3)
        return None


def _merge(a: UnitStats, b: UnitStats) -> UnitStats:
    failed = a.meta.get("failed", []) + b.meta.get("failed", [])
    items = max(a.meta.get("items", 0), b.meta.get("items", 0))
    resumed = a.meta.get("resumed", 0) + b.meta.get("resumed", 0)
    a.merge(b)
    a.meta = {"failed": failed, "items": items, "resumed": resumed}
    return a


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
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 50,
    distributed: bool = True,
) -> UnitStats:
    """One pass of ``net`` over ``dataset`` collecting :class:`UnitStats` (see module doc).

    ``top_n``: top images kept per unit; ``level``: the default quantile level of the unit
    thresholds (any other level can still be asked of :meth:`UnitStats.thresholds` later: the
    sketch keeps the whole distribution); ``resolution``: the quantile sketch's resolution
    (default: rank error < 1e-3 at 0.995). ``cache``: True for the default cache folder, a folder
    path, or False; a scan of the same weights, dataset and settings is loaded from it instead
    of recomputed. ``checkpoint``: a folder for the partial state (every ``checkpoint_every``
    batches; removed when the scan completes). ``distributed``: inside an initialised
    torch.distributed group, scan this rank's shard and merge (False: this process scans all).
    ``meta["dataset"]`` is the dataset's fingerprint; it is None for a dataset without files
    scanned with neither cache nor checkpoint (its fingerprint would read every item once more).

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
    if batch_size < 1:
        raise CamvizError(f"batch_size must be at least 1, got {batch_size}")
    start = time.perf_counter()
    rank, size = world(distributed)
    folder = _cache_folder(cache)
    # an in-memory dataset's fingerprint reads every item: only when a cache key needs it
    keyed = folder is not None or checkpoint is not None
    ids = share(lambda: {"model": model_fingerprint(net), "trunk": trunk_fingerprint(net),
                         "dataset": dataset_fingerprint(dataset, read_items=keyed)},
                "camviz scan")
    settings = {"top_n": top_n, "resolution": resolution, "autocast": autocast}
    key = hashlib.sha256(json.dumps([FORMAT, CACHE_KEY, ids["model"], ids["dataset"],
                                     *settings.values()]).encode()).hexdigest()[:24]
    target = folder / f"{key}.npz" if folder is not None else None
    if target is not None:
        cached = _cached(target, net.device, rank, size)
        if cached is not None:
            cached.level = float(level)
            return cached
    items = shard_of(n, batch_size, rank, size)
    ckpt = None
    if checkpoint is not None:
        ident = {**ids, "settings": {**settings, "batch_size": batch_size},
                 "shard": [items.start, items.stop]}
        ckpt = Checkpoint(checkpoint, "scan", ident, rank, size)
    with together("camviz scan"):
        stats = UnitStats.empty(net.num_units, net.classes, top_n, resolution, device=net.device)
        stats.weight, stats.bias = net.head_weight, net.head_bias
        stats = _scan_shard(net, dataset, items, stats, autocast, batch_size, num_workers,
                            progress, ckpt, checkpoint_every)
    if size > 1:
        stats = merge_on_all(stats, lambda s: pack(state_arrays(s)),
                             lambda b: from_state_arrays(unpack(b), net.device), _merge)
    failed, resumed = stats.meta.get("failed", []), stats.meta.get("resumed", 0)
    if stats.num_images == 0:
        first = f"; first: {failed[0][0]}: {failed[0][1]}" if failed else ""
        raise DatasetError(f"none of the {n} items could be read{first}")
    stats.level = float(level)
    stats.meta = {**ids, "items": n, "failed": failed, "resumed": resumed,
                  "model_repr": repr(net), "ranks": size,
                  "seconds": round(time.perf_counter() - start, 3),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with together("camviz scan: writing"):
        if target is not None and rank == 0:
            store_in_cache(stats.save, target, "scan")
    if ckpt is not None:
        ckpt.remove()
    return stats


def _cache_folder(cache: bool | str | os.PathLike[str]) -> Path | None:
    """The folder cached scans go to, or None: no cache, or one that cannot be written (then
    a warning, and the scan goes on; every rank follows rank 0's answer)."""
    if not cache:
        return None
    folder = scan_cache_dir() if cache is True else Path(cache)
    usable = share(lambda: writable_cache(folder, "scan") is not None, "camviz scan: the cache")
    return folder if usable else None


def _cached(target: Path, device: Any, rank: int, size: int) -> UnitStats | None:
    """The cached scan at ``target`` (rank 0 reads it and gives it to every rank), or None."""
    if size == 1:
        return _read_cache(target, device)
    found = _read_cache(target, device) if rank == 0 else None
    hit = share(lambda: found is not None, "camviz scan: reading the cache")
    if not hit:
        return None
    data = broadcast_bytes(pack(state_arrays(found)) if rank == 0 else None)  # every rank
    return found if rank == 0 else from_state_arrays(unpack(data), device)
