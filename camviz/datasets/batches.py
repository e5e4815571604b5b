"""Dataset items into batches: one item convention, one collate, bad items skipped.

Items may be a tensor (3, H, W), a tuple ``(image, label, ...)`` (a trailing dict is the
item's part masks), or a dict with ``"image"`` (and ``"label"``, ``"parts"``, boxes...).
Images that are not tensors (PIL images, arrays) go through the network's transform; tensors
follow :func:`camviz.images.to_batch`'s rules, as ``net.run`` does: float (normalised), uint8
pixels (scaled and normalised by the transform), anything else, NaN or infinity refused.

Example:
    >>> import torch
    >>> b = collate([torch.zeros(3, 2, 2), (torch.ones(3, 2, 2), 4)])
    >>> b["image"].shape, b["label"].tolist()
    (torch.Size([2, 3, 2, 2]), [-1, 4])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from camviz.errors import CamvizError, DatasetError, ImageError
from camviz.images import Preprocess, to_batch

__all__ = ["as_item", "collate", "Numbered", "Prepared", "SkipBad", "ITEM_FAILURES",
           "item_name"]

#: What reading one dataset item may raise that makes that item, not the job, fail: camviz's
#: own errors, files that cannot be read, malformed contents, decompression bombs.
ITEM_FAILURES = (CamvizError, OSError, ValueError, KeyError, IndexError, SyntaxError,
                 Image.DecompressionBombError)


def as_item(item: Any) -> dict[str, Any]:
    """One dataset item as a dict with ``"image"`` and an int ``"label"`` (-1: none).

    Example:
        >>> as_item((torch.zeros(3, 1, 1), torch.tensor(2)))["label"]
        2
    """
    if isinstance(item, dict):
        if "image" not in item:
            raise DatasetError(
                f"dataset items are dicts without an 'image' key (keys: {sorted(item)}); "
                "give items as a tensor, a tuple (image, label, ...) or a dict with 'image'"
            )
        out = dict(item)
        label = next((item[k] for k in ("label", "target", "class_index")
                      if item.get(k) is not None), -1)
    elif isinstance(item, (tuple, list)):
        if not item:
            raise DatasetError("a dataset item is an empty tuple; its first element must be "
                               "the image")
        out = {"image": item[0]}
        label = item[1] if len(item) > 1 else -1
        if len(item) > 1 and isinstance(item[-1], dict):
            out["parts"] = item[-1]
    else:
        out, label = {"image": item}, -1
    out["label"] = _label(label)
    return out


def _label(label: Any) -> int:
    if isinstance(label, torch.Tensor):
        return int(label.item()) if label.numel() == 1 and not label.is_floating_point() else -1
    if isinstance(label, (np.integer, int)) and not isinstance(label, bool):
        return int(label)
    return -1


def _image(img: Any, transform: Callable[[Any], torch.Tensor] | None) -> torch.Tensor:
    if not isinstance(img, torch.Tensor):
        if transform is None:
            raise DatasetError(
                f"dataset item image is {type(img).__name__}, not a tensor, and the network "
                "has no transform; preprocess items to (3, H, W) tensors or give the "
                "GapNet a transform"
            )
        img = transform(img)
        if not isinstance(img, torch.Tensor):
            raise DatasetError(f"the transform gave a {type(img).__name__}, not a (3, H, W) "
                               "tensor; give a transform that returns tensors")
    if img.ndim != 3 or img.shape[0] != 3:
        raise DatasetError(
            f"dataset item image has shape {tuple(img.shape)}; expected a preprocessed "
            "(3, H, W) tensor"
        )
    prep = transform if isinstance(transform, Preprocess) else None
    if img.dtype == torch.uint8 and transform is not None and prep is None:
        raise ImageError(
            "a uint8 tensor of pixels needs a camviz Preprocess transform to be scaled and "
            "normalised; give float tensors normalised like the network's input, or PIL images "
            "/ arrays for the transform"
        )
    return to_batch(img, prep)[0]  # net.run's rules: uint8 = pixels; other dtypes, NaN refused


def collate(items: Sequence[Any], transform: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Batch dataset items into one dict: ``"image"`` (B, 3, H, W) float32, ``"label"`` (B,)
    int64, other keys as lists (tensors of one shape stacked). Items that :class:`SkipBad`
    turned into failures are listed in ``"failed"`` as ``(index, reason)`` and left out.

    Example:
        >>> b = collate([{"image": torch.zeros(3, 2, 2), "boxes": np.zeros((1, 4))},
        ...              {"image": torch.ones(3, 2, 2), "boxes": np.zeros((2, 4))}])
        >>> b["image"].shape, len(b["boxes"]), b["failed"]
        (torch.Size([2, 3, 2, 2]), 2, [])
    """
    failed = [it.reason for it in items if isinstance(it, _Failed)]
    good = [as_item(it) for it in items if not isinstance(it, _Failed)]
    out: dict[str, Any] = {"failed": failed}
    if not good:
        return out
    images = [_image(it["image"], transform) for it in good]
    sizes = {tuple(t.shape) for t in images}
    if len(sizes) > 1:
        raise DatasetError(
            f"dataset items have different sizes {sorted(sizes)}; use a transform with a crop "
            "or exact resize so they form batches"
        )
    out["image"] = torch.stack(images)
    out["label"] = torch.tensor([it["label"] for it in good], dtype=torch.int64)
    for key in good[0]:
        if key in ("image", "label"):
            continue
        vals = [it.get(key) for it in good]
        if isinstance(vals[0], torch.Tensor) and all(
            isinstance(v, torch.Tensor) and v.shape == vals[0].shape for v in vals
        ):
            out[key] = torch.stack(vals)
        elif key == "index":
            out[key] = torch.as_tensor(vals)
        else:
            out[key] = vals
    return out


class _Failed:
    """An item that could not be read: ``reason`` is ``(index, message)``."""

    def __init__(self, index: int, message: str) -> None:
        self.reason = (index, message)


class Numbered(Dataset):
    """A dataset whose items are dicts (:func:`as_item`) that carry their dataset position
    (``"position"``), so a pass over a subset or a shard knows which rows are which.

    Example:
        >>> Numbered([torch.zeros(3, 1, 1)] * 2)[1]["position"]
        1
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**as_item(self.dataset[i]), "position": i}


class Prepared(Dataset):
    """A dataset whose items are dicts (:func:`as_item`) with the image already the network
    input, float32 (3, H, W), by :func:`collate`'s rules with ``transform``. Wrapped in
    :class:`SkipBad`, an image the transform or those rules refuse (too long a strip, a bool
    tensor, NaN) fails that item, not the batch it would have been in.

    Example:
        >>> ds = SkipBad(Prepared([torch.zeros(3, 1, 1), torch.zeros(3, 1, 1, dtype=torch.bool)]))
        >>> b = collate([ds[0], ds[1]])
        >>> b["image"].shape[0], b["failed"][0][0], "is not an image batch" in b["failed"][0][1]
        (1, 1, True)
    """

    def __init__(self, dataset: Any, transform: Callable[[Any], Any] | None = None) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = as_item(self.dataset[i])
        item["image"] = _image(item["image"], self.transform)
        return item


class SkipBad(Dataset):
    """A dataset whose unreadable items become failures (reported by :func:`collate`) instead
    of stopping the job. ``describe(i)`` names item ``i`` in the report (default: its index).

    Example:
        >>> class Flaky(Dataset):
        ...     def __len__(self): return 2
        ...     def __getitem__(self, i):
        ...         if i: raise OSError("truncated file")
        ...         return torch.zeros(3, 1, 1)
        >>> collate([SkipBad(Flaky())[i] for i in range(2)])["failed"]
        [(1, 'truncated file')]
    """

    def __init__(self, dataset: Dataset, describe: Callable[[int], Any] | None = None) -> None:
        self.dataset = dataset
        self.describe = describe or (lambda i: i)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        try:
            return self.dataset[i]
        except ITEM_FAILURES as err:
            return _Failed(self.describe(i), str(err))


def item_name(dataset: Any, i: int) -> str:
    """How a report names item ``i``: its file path (``paths``, a metadata record's or a
    torchvision ImageFolder's sample), its id (``image_ids``), else ``"item i"``.

    Example:
        >>> item_name([torch.zeros(1)], 0)
        'item 0'
    """
    if isinstance(dataset, Subset):
        return item_name(dataset.dataset, int(dataset.indices[i]))
    paths = getattr(dataset, "paths", None)
    if paths is not None:
        return str(paths[i])
    meta = getattr(dataset, "meta", None)
    if meta is not None and hasattr(meta, "records"):
        return str(meta.records[i].path)
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        return str(samples[i][0])
    ids = getattr(dataset, "image_ids", None)
    return str(ids[i]) if ids is not None else f"item {i}"
