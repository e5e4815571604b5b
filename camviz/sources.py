"""Networks by name as plain modules, to convert or fine-tune (``camviz fine-tune --model``).

:func:`load_source` gives a torchvision classification model (weights read with
``weights_only=True``), a timm model (``timm/NAME``, when timm is installed) or a registered
source (the demo world registers its fully connected baseline, ``"demo-fc"``) as an
``nn.Module`` with its class names and preprocessing; unlike :func:`camviz.load_model` it does
not wrap the model as a GapNet, so families camviz refuses (VGG, AlexNet, MobileNetV3) load too.

Example:
    >>> type(load_source("vgg11", weights=None).model).__name__  # doctest: +SKIP
    'VGG'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from camviz.errors import WeightsUnavailable
from camviz.images import Preprocess
from camviz.zoo import imagenet_classes, require_timm, timm_transform


@dataclass
class Source:
    """A network to convert or fine-tune, as a plain module, with its names and preprocessing."""

    model: nn.Module
    classes: list[str] | None
    transform: Preprocess | None


_SOURCES: dict[str, Callable[[Any], Source] | str] = {
    # lazy, as the registry's demo entries: the demo world loads only when asked for
    "demo-fc": "camviz.demo.fcnet:fc_source",
}


def register_source(name: str, loader: Callable[[Any], Source]) -> None:
    """Make ``load_source(name, weights)`` call ``loader(weights)`` (a function, or a
    ``"module:function"`` string imported on first use, as the demo's "demo-fc").

    Example:
        >>> register_source("tiny-fc", lambda w: Source(nn.Linear(2, 2), None, None))
        >>> type(load_source("tiny-fc").model).__name__
        'Linear'
    """
    _SOURCES[name] = loader


def _timm_source(name: str, weights: Any) -> Source:
    timm = require_timm()
    if not timm.is_model(name.split(".")[0]):
        raise WeightsUnavailable(f"timm has no model {name!r}; see camviz.list_models('timm')")
    try:
        model = timm.create_model(name, pretrained=weights is not None)
    except (OSError, RuntimeError, ValueError) as err:
        raise WeightsUnavailable(f"timm's pretrained weights of {name} are not available "
                                 f"({err}); offline? use --weights none for random weights"
                                 ) from err
    n = int(model.get_classifier().out_features)
    return Source(model, imagenet_classes() if n == 1000 else None, timm_transform(model))


def load_source(name: str, weights: Any = "DEFAULT") -> Source:
    """A network by name as a plain module: a registered source ("demo-fc"), ``timm/NAME``
    (needs timm), or a torchvision classification model with ``weights`` ("DEFAULT", a
    weights name, or None for random weights; downloads are read with ``weights_only=True``).

    Example:
        >>> src = load_source("alexnet", weights=None)
        >>> type(src.model).__name__, src.classes[:1], src.transform.crop
        ('AlexNet', ['tench'], (224, 224))
    """
    if name in _SOURCES:
        entry = _SOURCES[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = _SOURCES[name] = getattr(importlib.import_module(module), attr)
        return entry(weights)
    if name.startswith(("timm:", "timm/")):
        return _timm_source(name[5:], weights)
    from torchvision import models as tvm

    if name not in tvm.list_models(module=tvm):
        raise WeightsUnavailable(
            f"unknown model {name!r}: give a torchvision classification model name, timm/NAME, "
            f"one of {sorted(_SOURCES)}, or a .safetensors file written by camviz fine-tune")
    enum = tvm.get_model_weights(name)
    try:
        chosen = enum.DEFAULT if weights in (None, "DEFAULT") else enum[str(weights)]
    except KeyError:
        raise WeightsUnavailable(
            f"{name} has no weights {weights!r}; choose from {[w.name for w in enum]}") from None
    cats = chosen.meta.get("categories")
    model = tvm.get_model(name, weights=None, num_classes=len(cats) if cats else 1000)
    if weights is not None:
        try:
            model.load_state_dict(chosen.get_state_dict(progress=True, weights_only=True))
        except (OSError, RuntimeError) as err:
            raise WeightsUnavailable(
                f"could not get {chosen} ({err}); offline? put the file in torch's hub cache "
                f"({torch.hub.get_dir()}/checkpoints) or use --weights none") from err
    return Source(model, list(cats) if cats else None,
                  Preprocess.from_torchvision(chosen.transforms()))
