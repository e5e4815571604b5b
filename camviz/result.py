"""The result of one pass: logits, top-k, class maps and their unit decomposition, all lazy.

A :class:`CamResult` keeps the last conv features F (B, K, h, w) on the device with the head
(W, b); every map, unit ranking and score is derived from them, so changing a class, a
threshold or a unit never runs the network again.

Example:
    >>> import torch
    >>> from torch import nn
    >>> res = CamResult(logits=torch.zeros(2, 4), features=torch.rand(2, 6, 8, 8),
    ...                 weight=torch.rand(4, 6), bias=torch.zeros(4), pool="avg",
    ...                 classes=list("abcd"))
    >>> res.cams([0, 2], size=16, normalize=True).shape
    torch.Size([2, 2, 16, 16])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from camviz.errors import CamvizError
from camviz.images import Placement, Preprocess
from camviz.maps import global_pool, min_max, resize_min_max

Tensor = torch.Tensor
ClassSpec = int | Sequence[int] | Tensor | None
SizeSpec = int | tuple[int, int] | str | None


class TopK(NamedTuple):
    """Top-k classes of each image: probabilities, indices (both (B, k)) and names."""

    probs: Tensor
    indices: Tensor
    names: list[list[str]]


@dataclass
class Units:
    """The top-k units of one class per image (all tensors (B, k), maps (B, k, h, w)).

    ``contributions`` are w_ck * pool(f_k); over all K units they sum to ``logit - bias``
    (``total``). ``share`` is each unit's contribution over that total.
    """

    cls: Tensor
    ids: Tensor
    weights: Tensor
    contributions: Tensor
    maps: Tensor
    total: Tensor
    bias: Tensor

    @property
    def share(self) -> Tensor:
        """Each unit's contribution as a fraction of logit - bias (B, k)."""
        return self.contributions / self.total[:, None]

    @property
    def logit(self) -> Tensor:
        """The class logit per image (B,): total + bias."""
        return self.total + self.bias


def _unit_ids(ids: Sequence[int] | Tensor, device: torch.device, k: int) -> Tensor:
    given = torch.as_tensor(ids, device=device)
    if given.is_floating_point() or given.is_complex() or given.dtype == torch.bool:
        raise CamvizError(f"unit ids must be whole numbers, got {given.tolist()}")
    ids_t = given.long()
    if ids_t.numel() and (int(ids_t.min()) < 0 or int(ids_t.max()) >= k):
        raise CamvizError(f"unit ids must lie in 0..{k - 1}, got {ids_t.tolist()}")
    return ids_t


def _count(k: int, name: str) -> int:
    if isinstance(k, bool) or int(k) != k or int(k) < 1:  # 2.5 is not silently 2
        raise CamvizError(f"{name} must be at least 1 (a whole number), got {k}")
    return int(k)


def class_index(classes: ClassSpec, logits: Tensor) -> Tensor:
    """A class spec resolved against ``logits`` (B, C) as a LongTensor (B, n) on their device
    (:meth:`CamResult.class_index`).

    Example:
        >>> class_index(1, torch.zeros(2, 3)).tolist()
        [[1], [1]]
    """
    b, c = logits.shape
    if classes is None:
        idx = logits.argmax(dim=1, keepdim=True)
    elif isinstance(classes, Tensor):
        idx = classes.to(logits.device, torch.long)
        if idx.ndim == 0:
            idx = idx.expand(b)[:, None]
        elif idx.ndim == 1:
            if idx.shape[0] != b:
                raise CamvizError(
                    f"a 1-d class tensor gives one class per image: expected {b}, got "
                    f"{idx.shape[0]} (use a list for the same classes in every image)"
                )
            idx = idx[:, None]
        elif idx.ndim != 2 or idx.shape[0] != b:
            raise CamvizError(
                f"class tensor must be (B,) or (B, n) with B={b}, got {tuple(idx.shape)}"
            )
    elif isinstance(classes, (int, np.integer)):
        idx = torch.full((b, 1), int(classes), device=logits.device, dtype=torch.long)
    else:
        lst = [int(i) for i in classes]
        if not lst:
            raise CamvizError("empty class list")
        idx = torch.tensor(lst, device=logits.device, dtype=torch.long)[None].expand(b, -1)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= c):
        raise CamvizError(f"class index out of range 0..{c - 1}: {idx.tolist()}")
    return idx


def _batch_index(index: int | slice | Sequence[int], n: int,
                 device: torch.device) -> slice | Tensor:
    """An image index of a batch of ``n`` as a slice (int, slice) or LongTensor (ids)."""
    if isinstance(index, int):
        if not -n <= index < n:
            raise CamvizError(f"image {index} out of range: this result has {n} image(s)")
        return slice(index % n, index % n + 1)
    if isinstance(index, slice):
        return index
    ids = [int(i) for i in index]
    if any(not -n <= i < n for i in ids):
        raise CamvizError(f"images {ids} out of range: this result has {n} image(s)")
    return torch.as_tensor(ids, device=device, dtype=torch.long)


def _pick(items: list[Any], index: slice | Tensor) -> list[Any]:
    return items[index] if isinstance(index, slice) else [items[int(i)] for i in index.tolist()]


@dataclass
class CamResult:
    """One forward pass. Built by :meth:`camviz.GapNet.run`; cheap to query, never re-runs.

    To show a map over the photo the user gave (not the network input): ``placements[i]``
    gives the photo's (H, W) ``size`` and the ``region`` (left, top, right, bottom) of it that
    the input shows, and :meth:`photo_maps` gives the maps on that region's pixels.

    Example:
        >>> from camviz.gapnet import GapNet
        >>> from torch import nn
        >>> res = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 3), device="cpu").run(
        ...     torch.rand(1, 3, 8, 8))
        >>> res.topk(2).indices.shape
        torch.Size([1, 2])
    """

    logits: Tensor
    features: Tensor
    weight: Tensor
    bias: Tensor
    pool: str
    classes: list[str]
    inputs: Tensor | None = None
    transform: Preprocess | None = None
    trunk: str | None = None  # the net's camviz.gapnet.trunk_fingerprint (for unit statistics)
    #: Where each input lies in its original photo (size, region), one per image; None when
    #: the inputs were given as a normalised tensor.
    placements: list[Placement] | None = None

    def __len__(self) -> int:
        return self.logits.shape[0]

    @property
    def device(self) -> torch.device:
        return self.features.device

    @property
    def probs(self) -> Tensor:
        """Softmax of the logits (B, C)."""
        return self.logits.softmax(dim=1)

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the network input (falls back to the feature size when unknown)."""
        if self.inputs is not None:
            return (int(self.inputs.shape[-2]), int(self.inputs.shape[-1]))
        return (int(self.features.shape[-2]), int(self.features.shape[-1]))

    def topk(self, k: int = 5) -> TopK:
        """The k most probable classes of each image.

        Example:
            >>> res = CamResult(torch.tensor([[0.0, 2.0, 1.0]]), torch.zeros(1, 1, 1, 1),
            ...                 torch.zeros(3, 1), torch.zeros(3), "avg", ["a", "b", "c"])
            >>> res.topk(2).names
            [['b', 'c']]
        """
        k = min(_count(k, "k"), self.logits.shape[1])
        probs, idx = self.probs.topk(k, dim=1)
        names = [[self.classes[i] for i in row] for row in idx.tolist()]
        return TopK(probs, idx, names)

    def class_index(self, classes: ClassSpec = None) -> Tensor:
        """Resolve a class spec to a LongTensor (B, n) on the device.

        None: top-1 of each image; int: that class for all; list of ints: the same list for
        every image; LongTensor (B,) or (B, n): per image.

        Example:
            >>> res = CamResult(torch.zeros(2, 3), torch.zeros(2, 1, 1, 1), torch.zeros(3, 1),
            ...                 torch.zeros(3), "avg", ["a", "b", "c"])
            >>> res.class_index([0, 2]).tolist()
            [[0, 2], [0, 2]]
        """
        return class_index(classes, self.logits)

    def _size(self, size: SizeSpec) -> tuple[int, int] | None:
        if size is None:
            return None
        if size == "input":
            return self.input_size
        if isinstance(size, str):
            raise CamvizError(f"size must be None, an int, (H, W) or 'input', got {size!r}")
        hw = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
        if len(hw) != 2 or min(hw) < 1:
            raise CamvizError(f"size must be positive (an int or (H, W)), got {size!r}")
        return hw

    def cams(
        self, classes: ClassSpec = None, size: SizeSpec = None, normalize: bool = False
    ) -> Tensor:
        """Class activation maps sum_k W_ck F_k (no bias): (B, n, h, w), or (B, n, H, W).

        ``size`` upsamples bilinearly (int, (H, W), or "input" for the network input size);
        ``normalize`` min-max normalises each map after upsampling.

        Example:
            >>> from camviz.gapnet import GapNet
            >>> from torch import nn
            >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 3), device="cpu")
            >>> res = net.run(torch.rand(2, 3, 8, 8))
            >>> raw = res.cams(torch.tensor([1, 2]))
            >>> torch.allclose(raw.mean((2, 3))[:, 0] + net.head_bias[[1, 2]],
            ...                res.logits[[0, 1], [1, 2]], atol=1e-5)
            True
        """
        idx = self.class_index(classes)
        w = self.weight[idx]  # (B, n, K)
        maps = torch.einsum("bnk,bkhw->bnhw", w, self.features)
        return self._finish(maps, size, normalize)

    def _finish(self, maps: Tensor, size: SizeSpec, normalize: bool) -> Tensor:
        hw = self._size(size)
        if normalize and hw is not None:
            return resize_min_max(maps, hw)  # normalises the small maps: same result, faster
        if hw is not None and tuple(maps.shape[-2:]) != hw:
            maps = F.interpolate(maps, size=hw, mode="bilinear", align_corners=False)
        if normalize:
            maps = min_max(maps)
        return maps

    def units(self, cls: int | Tensor, k: int = 8, order: str = "weight") -> Units:
        """Top-k units of class ``cls`` per image, ranked by head weight or by contribution.

        ``cls`` is an int (same class for every image) or a LongTensor (B,) per image.

        Example:
            >>> from camviz.gapnet import GapNet
            >>> from torch import nn
            >>> res = GapNet(nn.Conv2d(3, 6, 1), nn.Linear(6, 3), device="cpu").run(
            ...     torch.rand(2, 3, 8, 8))
            >>> u = res.units(1, k=3, order="contribution")
            >>> u.ids.shape, u.maps.shape
            (torch.Size([2, 3]), torch.Size([2, 3, 8, 8]))
        """
        if order not in ("weight", "contribution"):
            raise CamvizError(f"order must be 'weight' or 'contribution', got {order!r}")
        idx = self.class_index(cls if isinstance(cls, Tensor) else int(cls))
        if idx.shape[1] != 1:
            raise CamvizError("units() takes one class per image")
        c = idx[:, 0]
        w = self.weight[c]  # (B, K)
        pooled = self.pooled()
        contrib = w * pooled
        k = min(_count(k, "k"), w.shape[1])
        score = w if order == "weight" else contrib
        ids = score.topk(k, dim=1).indices
        b = torch.arange(len(self), device=self.device)[:, None]
        maps = w.gather(1, ids)[..., None, None] * self.features[b, ids]
        return Units(
            cls=c,
            ids=ids,
            weights=w.gather(1, ids),
            contributions=contrib.gather(1, ids),
            maps=maps,
            total=contrib.sum(dim=1),
            bias=self.bias[c],
        )

    def unit_maps(
        self, ids: Sequence[int] | Tensor, size: SizeSpec = None, normalize: bool = False
    ) -> Tensor:
        """Raw maps f_k of the given units (no weight): (B, n, h, w), optionally resized.

        Example:
            >>> res = CamResult(torch.zeros(1, 2), torch.rand(1, 3, 4, 4), torch.zeros(2, 3),
            ...                 torch.zeros(2), "avg", ["a", "b"])
            >>> res.unit_maps([2, 0], size=8).shape
            torch.Size([1, 2, 8, 8])
        """
        ids_t = _unit_ids(ids, self.device, self.features.shape[1])
        maps = (
            self.features[:, ids_t]
            if ids_t.ndim == 1
            else self.features.gather(
                1, ids_t[..., None, None].expand(-1, -1, *self.features.shape[-2:])
            )
        )
        return self._finish(maps, size, normalize)

    def pooled(self) -> Tensor:
        """Globally pooled features (B, K): the head's input."""
        return global_pool(self.features, self.pool)

    def images(self) -> np.ndarray:
        """The network input de-normalised to uint8 (B, H, W, 3): what the maps align with.

        Example:
            >>> res = CamResult(torch.zeros(1, 2), torch.zeros(1, 1, 2, 2), torch.zeros(2, 1),
            ...                 torch.zeros(2), "avg", ["a", "b"], inputs=torch.zeros(1, 3, 4, 4),
            ...                 transform=Preprocess(mean=(0, 0, 0), std=(1, 1, 1)))
            >>> res.images().shape
            (1, 4, 4, 3)
        """
        if self.inputs is None:
            raise CamvizError("this result kept no inputs, so it cannot show its images")
        prep = self.transform or Preprocess()
        return prep.denormalize(self.inputs)

    def select(self, index: int | slice | Sequence[int]) -> CamResult:
        """A result for a subset of the batch (views, no copy where possible).

        Example:
            >>> res = CamResult(torch.zeros(3, 2), torch.zeros(3, 1, 2, 2), torch.zeros(2, 1),
            ...                 torch.zeros(2), "avg", ["a", "b"])
            >>> len(res.select([0, 2]))
            2
        """
        index = _batch_index(index, len(self), self.device)
        return CamResult(
            logits=self.logits[index],
            features=self.features[index],
            weight=self.weight,
            bias=self.bias,
            pool=self.pool,
            classes=self.classes,
            inputs=None if self.inputs is None else self.inputs[index],
            transform=self.transform,
            trunk=self.trunk,
            placements=None if self.placements is None else _pick(self.placements, index),
        )

    def photo_maps(self, i: int, classes: ClassSpec = None, normalize: bool = True,
                   max_side: int | None = None) -> Tensor:
        """The maps of image ``i`` on its original photo's pixels: (n, H, W) over
        ``placements[i].region`` (the whole photo in the whole view; the crop's footprint in
        the crop view, to be pasted at its (left, top)), upsampled bilinearly from the cells
        and min-max normalised (``normalize``). ``max_side`` caps the longer side (the aspect
        is kept), for display.

        Example:
            >>> from camviz.gapnet import GapNet
            >>> from torch import nn
            >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 3), device="cpu",
            ...              transform=Preprocess(resize=16))
            >>> res = net.run([np.zeros((30, 50, 3), np.uint8)], view="whole")
            >>> res.placements[0].size, tuple(res.photo_maps(0, [0, 2]).shape)
            ((30, 50), (2, 30, 50))
        """
        if self.placements is None:
            raise CamvizError("this result has no photos (its inputs were a normalised tensor): "
                              "run the network on paths, PIL images or arrays")
        hw = self.placements[i].region_size
        if max_side is not None and max(hw) > max_side:
            scale = max_side / max(hw)
            hw = (max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale)))
        return self.select(i).cams(classes, size=hw, normalize=normalize)[0]
