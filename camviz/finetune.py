"""Fine-tune a network on class labels: a plain, seeded, resumable training loop.

:func:`fine_tune` trains a copy of a model (typically from :func:`camviz.convert.to_gap`) on a
dataset of ``(image, label)`` items (tuples, or dicts with ``"image"`` and ``"label"``, as
:class:`camviz.units.PartsFolder` and :class:`camviz.datasets.WsolDataset` give) and returns a
:class:`camviz.GapNet`; :func:`train` is the same loop returning the module (for networks that
are not GAP networks, such as the demo world's fully connected baseline).

The recipe: AdamW (decay on weights, not on biases and norms) or SGD with momentum; a linear
warm-up then a cosine schedule, per step; the layers ``model.new_layers`` names at
``new_lr_mult`` times the learning rate of the pretrained ones; optional bf16 / fp16 autocast
(fp16 with a gradient scaler); a tqdm bar showing the running loss and accuracy. Every epoch
uses its own seeded shuffle and RNG state, derived from ``seed`` and the epoch, so an epoch
gives the same result whether or not the run was interrupted before it. After each epoch a
checkpoint (model, optimizer, scaler; tensors and plain values only, read back with
``weights_only=True``) is written atomically; a rerun with the same arguments resumes after the
last finished epoch, and a checkpoint from other settings, another model or other data is
refused. On the CPU a resumed run ends with the same weights, bit for bit, as an uninterrupted
one.

Example:
    >>> from torch import nn
    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.randn(16, 3, 8, 8), torch.arange(16) % 2)
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 2))
    >>> history = train(model, data, Settings(epochs=2, lr=1e-2, batch_size=8), progress=False)
    >>> [h["epoch"] for h in history]
    [1, 2]
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from camviz.errors import CamvizError, DatasetError
from camviz.files import temp_name
from camviz.gapnet import GapNet, resolve_device
from camviz.images import Preprocess

CHECKPOINT_FORMAT = 1


class CheckpointMismatch(CamvizError):
    """A checkpoint was made by another run (settings, model or data differ)."""


@dataclass(frozen=True)
class Settings:
    """Everything that decides the result of a run; a checkpoint must match it to be resumed.

    ``steps_per_epoch``: batches per epoch (None: one pass over the dataset, last partial batch
    dropped). ``warmup``: fraction of all steps with a linear warm-up. ``autocast``: None,
    "bf16" or "fp16". ``new_lr_mult``: learning-rate factor of the new layers.
    ``freeze_epochs``: the first epochs train the new layers only (the others get no gradient,
    which also saves their backward pass), so the pretrained layers are not pushed around by
    a random head.

    Example:
        >>> Settings(epochs=3, lr=0.01).optimizer
        'adamw'
    """

    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    new_lr_mult: float = 10.0
    warmup: float = 0.05
    label_smoothing: float = 0.0
    autocast: str | None = None
    seed: int = 0
    steps_per_epoch: int | None = None
    freeze_epochs: int = 0
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise CamvizError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.autocast not in (None, "bf16", "fp16"):
            raise CamvizError(f"autocast must be None, 'bf16' or 'fp16', got {self.autocast!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise CamvizError("epochs and batch_size must be >= 1 and lr > 0")


# ---------------------------------------------------------------------------------- data


def split_item(item: Any) -> tuple[Any, int]:
    """``(image, label)`` of a dataset item: a tuple/list ``(image, label, ...)`` or a dict with
    ``"image"`` and ``"label"``.

    Example:
        >>> split_item({"image": 1, "label": 2, "parts": {}})
        (1, 2)
    """
    if isinstance(item, dict) and "image" in item and "label" in item:
        return item["image"], int(item["label"])
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], int(item[1])
    raise DatasetError(
        f"a fine-tuning item must be (image, label, ...) or a dict with 'image' and 'label'; "
        f"got {type(item).__name__}"
    )


class _Items:
    """Collate: images (tensors, or PIL images / arrays through ``transform``) and labels."""

    def __init__(self, transform: Preprocess | None) -> None:
        self.transform = transform

    def __call__(self, items: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for item in items:
            x, y = split_item(item)
            if not isinstance(x, torch.Tensor):
                if self.transform is None:
                    raise DatasetError(
                        f"dataset items are {type(x).__name__}, not tensors: give transform= "
                        "(the network's Preprocess) or a dataset with a transform")
                x = self.transform(x)
            if y < 0:
                raise DatasetError("an item has no class label (-1); fine-tuning needs labels")
            xs.append(x)
            ys.append(y)
        return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}".encode()).digest()[:7], "little")


def _batches(n: int, s: Settings) -> int:
    per = s.steps_per_epoch or max(1, n // s.batch_size)
    return per


def _epoch_order(n: int, s: Settings, epoch: int) -> list[int]:
    """The items of one epoch: a seeded permutation (repeated if an epoch wants more)."""
    g = torch.Generator().manual_seed(_epoch_seed(s.seed, epoch))
    need = _batches(n, s) * min(s.batch_size, n)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(need / n))])
    return order[:need].tolist()


def dataset_classes(dataset: Dataset) -> list[str]:
    """Class names of a labelled dataset: its folder's ``classes.txt`` (``index,name`` lines, as
    the demo world writes), else ``class 0 .. class N-1`` from its labels.

    Example:
        >>> from camviz.demo import write_split
        >>> from camviz.datasets import PartsFolder
        >>> import tempfile
        >>> root = write_split("val", 2, tempfile.mkdtemp(), progress=False)
        >>> dataset_classes(PartsFolder(root))[:2]
        ['house', 'tree']
    """
    meta = getattr(dataset, "meta", None)
    root = getattr(dataset, "root", None) or getattr(meta, "metadata_dir", None)
    names = Path(root) / "classes.txt" if root is not None else None
    if names is not None and names.is_file():
        rows = [line.split(",", 1) for line in names.read_text().splitlines() if "," in line]
        try:
            table = {int(i): name.strip() for i, name in rows}
        except ValueError:
            raise DatasetError(f"{names}: lines must be index,name") from None
        if sorted(table) != list(range(len(table))):
            raise DatasetError(f"{names}: indices must be 0..N-1, each once")
        return [table[i] for i in range(len(table))]
    labels = getattr(dataset, "labels", None)
    if labels is None and meta is not None and hasattr(meta, "records"):
        labels = [r.label for r in meta.records]
    labels = [int(v) for v in labels] if labels is not None else []
    if not labels or min(labels) < 0:
        raise DatasetError(
            "fine-tuning needs class labels: give a folder with class_labels.txt (wsolevaluation "
            "layout, optionally classes.txt with index,name lines) or demo:SPLIT[:N]")
    return [f"class {i}" for i in range(max(labels) + 1)]


# ---------------------------------------------------------------------------------- fingerprints


def _tensor_digest(h: Any, state: dict[str, torch.Tensor]) -> None:
    for k, v in state.items():
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}:{t.dtype}:{tuple(v.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())


def model_fingerprint(model: nn.Module) -> str:
    """A hash of a model's class, structure and weights (what a checkpoint was made from).

    Example:
        >>> a = nn.Linear(2, 2); model_fingerprint(a) == model_fingerprint(copy.deepcopy(a))
        True
    """
    h = hashlib.sha256(f"{type(model).__qualname__}\n{model}".encode())
    _tensor_digest(h, model.state_dict())
    return h.hexdigest()[:32]


def data_fingerprint(dataset: Dataset) -> str:
    """A hash of a dataset's class, length, root and labels (where it exposes them).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> len(data_fingerprint(TensorDataset(torch.zeros(3, 1))))
        32
    """
    root = getattr(dataset, "root", None) or getattr(getattr(dataset, "meta", None),
                                                   "metadata_dir", None)
    h = hashlib.sha256(f"{type(dataset).__qualname__}:{len(dataset)}:{root}".encode())
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    if isinstance(labels, Sequence):
        h.update(json.dumps([int(v) for v in labels]).encode())
    tensors = getattr(dataset, "tensors", None)  # TensorDataset
    if isinstance(tensors, tuple):
        _tensor_digest(h, {str(i): t for i, t in enumerate(tensors)})
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------------------- checkpoints


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)  # a killed run's leftover is found by remove_stale_temps
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_checkpoint(path: Path, key: dict[str, str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointMismatch(
            f"{path} is not a checkpoint that loads with weights_only=True ({err}); delete it "
            "to start over") from err
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatch(f"{path} is not a camviz fine-tuning checkpoint; delete it or "
                                 "choose another checkpoint path")
    if ck.get("model") != key["model"]:
        raise CheckpointMismatch(
            f"{path} was made from another model (its weights or architecture at the start "
            "differ: seed torch before to_gap so new layers start the same); delete it or "
            "choose another checkpoint path to start over")
    if ck.get("data") != key["data"]:
        raise CheckpointMismatch(f"{path} was made on other data; delete it or choose another "
                                 "checkpoint path")
    mine, theirs = json.loads(key["settings"]), json.loads(ck.get("settings", "{}"))
    diff = [f"{k}: {theirs.get(k)!r} there, {v!r} here" for k, v in mine.items()
            if theirs.get(k) != v]
    if diff:
        raise CheckpointMismatch(
            f"{path} was made with other settings ({'; '.join(diff)}); rerun with the same "
            "settings to resume, or delete it / choose another checkpoint path to start over")
    return ck


def _resume(path: Path, key: dict[str, str], model: nn.Module, opt: torch.optim.Optimizer,
            scaler: Any) -> list[dict[str, Any]]:
    """Load a matching checkpoint into model, optimizer and scaler; its history (or [])."""
    ck = _load_checkpoint(path, key)
    if ck is None:
        return []
    model.load_state_dict(ck["state"])
    opt.load_state_dict(ck["optimizer"])
    if ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    return json.loads(ck["history"])


# ---------------------------------------------------------------------------------- the loop


def _param_groups(model: nn.Module, s: Settings, new: Sequence[str]) -> list[dict[str, Any]]:
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (any(name.startswith(pre) for pre in new), p.ndim > 1)
            groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr_mult": s.new_lr_mult if is_new else 1.0,
             "weight_decay": s.weight_decay if decays else 0.0}
            for (is_new, decays), ps in sorted(groups.items())]


def _optimizer(model: nn.Module, s: Settings, new: Sequence[str]) -> torch.optim.Optimizer:
    groups = _param_groups(model, s, new)
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum)
    return torch.optim.AdamW(groups, lr=s.lr)


def lr_factor(step: int, total: int, warmup: float) -> float:
    """The schedule: linear warm-up over ``warmup * total`` steps, then cosine to zero.

    Example:
        >>> [round(lr_factor(i, 10, 0.2), 3) for i in (0, 1, 2, 6, 9)]
        [0.5, 1.0, 1.0, 0.5, 0.038]
    """
    w = max(1, round(warmup * total)) if warmup > 0 else 0
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, total - w)))


def train(
    model: nn.Module,
    dataset: Dataset,
    settings: Settings,
    new_layers: Sequence[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "auto",
    transform: Preprocess | None = None,
    num_workers: int = 0,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place (left in eval mode, on ``device``); returns one record per
    epoch (``epoch``, ``loss``, ``accuracy`` in percent over its training batches, ``lr``).

    ``new_layers``: parameter-name prefixes trained at ``settings.new_lr_mult`` x the rate
    (default ``model.new_layers``, else none). ``checkpoint``: a file written after every
    epoch and resumed from (see the module doc). ``callback(record)`` runs after each epoch's
    checkpoint; an exception from it stops the run there (a rerun resumes).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.randn(8, 3, 4, 4), torch.arange(8) % 2)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
        >>> len(train(model, data, Settings(epochs=3, batch_size=4), progress=False))
        3
    """
    dev = resolve_device(device)
    new = tuple(new_layers if new_layers is not None else getattr(model, "new_layers", ()))
    n = len(dataset)
    if n == 0:
        raise DatasetError("the dataset is empty: nothing to train on")
    model.to(dev)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    key = {"model": model_fingerprint(model), "data": data_fingerprint(dataset),
           "settings": json.dumps(asdict(settings), sort_keys=True)}
    opt = _optimizer(model, settings, new)
    scaler = torch.amp.GradScaler(dev.type, enabled=settings.autocast == "fp16")
    path = Path(checkpoint) if checkpoint is not None else None
    history = _resume(path, key, model, opt, scaler) if path is not None else []
    collate = _Items(transform)
    devices = [dev] if dev.type == "cuda" else []
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    try:
        with torch.random.fork_rng(devices=devices, device_type=dev.type if devices else "cuda"):
            for epoch in range(len(history), settings.epochs):
                for name, p in trainable:
                    p.requires_grad_(epoch >= settings.freeze_epochs or name.startswith(new))
                history.append(_epoch(model, dataset, settings, epoch, opt, scaler, collate, dev,
                                      num_workers, progress))
                if path is not None:
                    _save_checkpoint(path, {
                        "format": CHECKPOINT_FORMAT, **key, "history": json.dumps(history),
                        "state": {k: v.detach().cpu().clone()
                                  for k, v in model.state_dict().items()},
                        "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                    })
                if callback is not None:
                    callback(history[-1])
    finally:
        for _, p in trainable:
            p.requires_grad_(True)
    model.eval()
    return history


def _epoch(model: nn.Module, dataset: Dataset, s: Settings, epoch: int,
           opt: torch.optim.Optimizer, scaler: Any, collate: _Items, dev: torch.device,
           num_workers: int, progress: bool) -> dict[str, Any]:
    n = len(dataset)
    per = _batches(n, s)
    total = per * s.epochs
    torch.manual_seed(_epoch_seed(s.seed, epoch) + 1)  # dropout and other in-model randomness
    loader = DataLoader(Subset(dataset, _epoch_order(n, s, epoch)),
                        batch_size=min(s.batch_size, n), shuffle=False, collate_fn=collate,
                        num_workers=num_workers)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(s.autocast or "")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=per, desc=f"epoch {epoch + 1}/{s.epochs}", unit="step")
    model.train()
    loss_sum, right, seen = 0.0, 0, 0
    for i, (x, y) in enumerate(loader):
        rate = s.lr * lr_factor(epoch * per + i, total, s.warmup)
        for g in opt.param_groups:
            g["lr"] = rate * g["lr_mult"]
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=s.label_smoothing)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        loss_sum += float(loss.detach()) * len(y)
        right += int((logits.detach().argmax(1) == y).sum())
        seen += len(y)
        if bar is not None:
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * right / seen:.1f}%",
                            refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    return {"epoch": epoch + 1, "loss": loss_sum / max(1, seen),
            "accuracy": 100.0 * right / max(1, seen), "steps": per}


def fine_tune(
    model: nn.Module,
    dataset: Dataset,
    epochs: int = 5,
    lr: float = 1e-3,
    *,
    classes: Sequence[str] | None = None,
    transform: Preprocess | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "auto",
    num_workers: int = 0,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    probe_size: int | tuple[int, int] | None = None,
    **settings: Any,
) -> GapNet:
    """Fine-tune a copy of ``model`` (``model`` itself is left unchanged) and wrap it.

    ``settings`` are :class:`Settings` fields (``batch_size``, ``optimizer``, ``new_lr_mult``,
    ``autocast``, ``seed``, ...). ``classes`` and ``transform`` go to the returned
    :class:`GapNet` (``transform`` also preprocesses PIL items). The per-epoch records are in
    ``net.history``.

    Example:
        >>> import torchvision
        >>> from torch.utils.data import TensorDataset
        >>> from camviz.convert import to_gap
        >>> gap = to_gap(torchvision.models.alexnet(num_classes=2), width=16)
        >>> data = TensorDataset(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1]))
        >>> net = fine_tune(gap, data, epochs=1, batch_size=2, progress=False, device="cpu",
        ...                 probe_size=64)
        >>> net.num_classes, len(net.history)
        (2, 1)
    """
    names = {f.name for f in fields(Settings)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise CamvizError(f"unknown fine_tune settings {unknown}; choose from {sorted(names)}")
    s = Settings(epochs=epochs, lr=lr, **settings)
    work = copy.deepcopy(model)
    history = train(work, dataset, s, checkpoint=checkpoint, device=device, transform=transform,
                    num_workers=num_workers, progress=progress, callback=callback)
    if s.channels_last:
        work.to(memory_format=torch.contiguous_format)
    if probe_size is None and transform is not None:
        probe_size = transform.output_size
    net = GapNet.from_model(work, classes=classes, transform=transform, device=device,
                            probe_size=probe_size)
    net.history = history
    return net
