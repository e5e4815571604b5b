"""The browser's results: one forward pass per image, the last ``keep`` kept, errors as errors.

No ipywidgets, no plotly: the view model reads its images from here.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from camviz.gapnet import GapNet
    >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
    >>> cache = ResultCache(net, torch.rand(3, 3, 8, 8), keep=2)
    >>> _ = cache.get(0), cache.get(0), cache.get(1)
    >>> cache.forward_passes, len(cache), cache.shown
    (2, 2, 2)
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from camviz.errors import CamvizError
from camviz.gapnet import GapNet
from camviz.hooks import torch_threads
from camviz.images import VIEWS, list_images
from camviz.result import CamResult
from camviz.widgets.drawing import TILE, data_uri

__all__ = ["IMAGE_FAILURES", "ImageResult", "ResultCache", "as_items", "label_of", "labels_of"]

#: Failures of one image that the browser shows instead of raising (a bad file, a bad array,
#: an input the network cannot take).
IMAGE_FAILURES = (CamvizError, OSError, ValueError, RuntimeError)


@dataclass(frozen=True, eq=False)  # compared by identity: a new pass is a new result
class ImageResult:
    """What one forward pass of one image leaves for drawing."""

    res: CamResult
    image: np.ndarray  # uint8 (H, W, 3), the network input de-normalised
    source: str  # the image as a JPEG data URI for plotly
    thumb: np.ndarray  # uint8 image whose long side is TILE, for the unit tiles
    probs: torch.Tensor  # (C,) on the device


def label_of(item: Any, i: int) -> str:
    """The name an image is listed under: its file name, else ``image i``.

    Example:
        >>> label_of("photos/cat.jpg", 0), label_of(None, 3)
        ('cat.jpg', 'image 3')
    """
    if isinstance(item, (str, os.PathLike)):
        return Path(item).name or str(item)
    return f"image {i}"


def labels_of(items: Sequence[Any], labels: Sequence[str] | None = None) -> list[str]:
    """The names images are listed under: ``labels`` when given (one per image), else each
    path's file name (with its folders where two files share a name) or ``image i``.

    Example:
        >>> labels_of(["a/cat.jpg", "b/cat.jpg", "dog.png", None])
        ['a/cat.jpg', 'b/cat.jpg', 'dog.png', 'image 3']
    """
    if labels is not None:
        names = [str(lab) for lab in labels]
        if len(names) != len(items):
            raise CamvizError(f"labels= names {len(names)} images, but {len(items)} were given: "
                              "give one label per image")
        return names
    names = [label_of(it, i) for i, it in enumerate(items)]
    for name in {n for n in names if names.count(n) > 1}:
        same = [i for i, n in enumerate(names) if n == name]
        parts = [Path(items[i]).parts if isinstance(items[i], (str, os.PathLike)) else ()
                 for i in same]
        depth = 1
        while depth < max(len(p) for p in parts) and len(
                {p[-depth - 1:] for p in parts}) < len(parts):
            depth += 1
        for i, p in zip(same, parts, strict=True):
            if p:
                names[i] = "/".join(p[-depth - 1:])
    return names


def as_items(images: Any) -> list[Any]:
    """One item per image: paths, a folder, PIL images, arrays, or a tensor (B, 3, H, W).

    Example:
        >>> len(as_items(torch.zeros(2, 3, 4, 4)))
        2
    """
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            return [images]
        if images.ndim == 4:
            return list(images)
        raise CamvizError(f"a tensor of images must be (B, 3, H, W), got {tuple(images.shape)}")
    if isinstance(images, (str, os.PathLike)):
        return list(list_images([images]))
    if isinstance(images, (Image.Image, np.ndarray)):
        return [images]
    items = list(images)
    if not items:
        raise CamvizError("Browser needs at least one image (paths, PIL images or arrays)")
    return items


def _thumb(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = TILE / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    return np.asarray(Image.fromarray(image).resize((tw, th), Image.BILINEAR))


class ResultCache:
    """Results of ``net`` on ``images``, one forward pass per image when it is first asked for.

    The results (or the errors: an image that failed is not run again while it is kept) of the
    ``keep`` images asked for last are kept; each holds its input and features (about 1 MB for
    resnet50 at 224 x 224). An image asked for again after it was dropped runs once more.
    ``forward_passes`` counts the passes, ``last_forward_ms`` times the last one. ``labels``:
    the names the images are listed under (see :func:`labels_of`). ``view``: "whole" (the
    whole photo, ``GapNet.run(view="whole")``) or "crop" (the model's transform as it is); a
    float tensor (already preprocessed) is run as it is.

    Example:
        >>> from torch import nn
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> ResultCache(net, torch.rand(1, 3, 8, 8)).get(0).image.shape
        (8, 8, 3)
    """

    def __init__(self, net: GapNet, images: Any, keep: int = 128,
                 labels: Sequence[str] | None = None, view: str = "whole") -> None:
        if view not in VIEWS:
            raise CamvizError(f"view must be 'whole' (the whole photo) or 'crop' (the model's "
                              f"centre crop), not {view!r}")
        self.net, self.view = net, view
        self.items = as_items(images)
        self.labels = labels_of(self.items, labels)
        self.keep = max(1, int(keep))
        self.forward_passes = 0
        self.last_forward_ms = 0.0
        self._kept: OrderedDict[int, ImageResult | Exception] = OrderedDict()
        self._shown: set[int] = set()

    def __len__(self) -> int:
        """How many results (or errors) are kept."""
        return len(self._kept)

    def __contains__(self, i: object) -> bool:
        return i in self._kept

    @property
    def shown(self) -> int:
        """How many distinct images were asked for."""
        return len(self._shown)

    def get(self, i: int) -> ImageResult | Exception:
        """The result of image ``i`` (running the network if it is not kept), or its error."""
        if not 0 <= int(i) < len(self.items):
            raise CamvizError(f"image {i} out of range 0..{len(self.items) - 1}")
        i = int(i)
        if i in self._kept:
            self._kept.move_to_end(i)
            return self._kept[i]
        try:
            view: ImageResult | Exception = self._run(self.items[i])
        except IMAGE_FAILURES as err:
            view = err
        self._kept[i] = view
        self._shown.add(i)
        while len(self._kept) > self.keep:
            self._kept.popitem(last=False)
        return view

    def _run(self, item: Any) -> ImageResult:
        t0 = time.perf_counter()
        if isinstance(item, torch.Tensor) and item.is_floating_point():  # preprocessed
            res = self.net.run(item if item.ndim == 4 else item[None])
        else:
            res = self.net.run([item], view=self.view)
        self.forward_passes += 1
        self.last_forward_ms = (time.perf_counter() - t0) * 1e3
        with torch_threads(1):  # one small image: intra-op threads cost more than they give
            image = res.images()[0]
            probs = res.probs[0]
        return ImageResult(res=res, image=image, source=data_uri(image), thumb=_thumb(image),
                           probs=probs)
