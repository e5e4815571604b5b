"""The registry: the model names ``load_model`` takes and the families ``from_model`` knows.

Two tables, after torchvision's ``models/_api.py``:

* **Model names** -> loaders ``loader(weights=..., device=..., **kw) -> GapNet``, added with
  :func:`register_model` (a function or a decorator). An entry may be a ``"module:function"``
  string, imported on first use, so that the demo world (and anything heavy) loads only when
  one of its models is asked for. A name that exists raises unless ``replace=True``.
* **Family adapters**: model class -> ``fn(model) -> Adapter`` (where the features F and the
  head live in that family), added with :func:`register_adapter`. torchvision's families are
  installed once, on first use; a subclass finds its parent's adapter.

Example:
    >>> "demo" in list_models("camviz"), "resnet50" in list_models("torchvision")
    (True, True)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camviz.errors import CamvizError, NotAGapNetwork

__all__ = [
    "Adapter",
    "HEAD_ADVICE",
    "adapter_for",
    "linear_at",
    "list_models",
    "model_loader",
    "register_adapter",
    "register_model",
]

Tensor = torch.Tensor


@dataclass(frozen=True)
class Adapter:
    """Where a model keeps its GAP structure.

    ``site``: dotted name of the module whose output is F (before ``post``); ``head``: dotted
    name of the final ``nn.Linear``; ``post``: an elementwise function the model applies to F
    before pooling (DenseNet's ReLU); ``norm``: dotted name of a LayerNorm applied to the pooled
    vector (ConvNeXt), folded per image into F and into the head; ``pool``: "avg" or "max".

    Example:
        >>> Adapter(site="layer4", head="fc").pool
        'avg'
    """

    site: str
    head: str
    post: Callable[[Tensor], Tensor] | None = None
    norm: str | None = None
    pool: str = "avg"


AdapterFn = Callable[[nn.Module], Adapter]
ModelLoader = Callable[..., Any]

_ADAPTERS: dict[type, AdapterFn] = {}
_MODELS: dict[str, ModelLoader | str] = {
    # lazy: importing camviz.demo (the world, its generator) waits until these are loaded
    "demo": "camviz.demo.net:load_demo_gap",
    "demo-gmp": "camviz.demo.net:load_demo_gmp",
}
_installed: list[str] = []  # the families installed so far (torchvision on first use)

HEAD_ADVICE = (
    "Replace it by one nn.Linear (and retrain it on frozen features), or wrap the network "
    "yourself with GapNet(features, head)."
)


# ---------------------------------------------------------------------------------- adapters


def register_adapter(cls: type, fn: AdapterFn, *, replace: bool = False) -> None:
    """Teach :meth:`camviz.GapNet.from_model` a model family: ``fn(model) -> Adapter``.

    Registering a class that already has an adapter raises unless ``replace=True``.

    Example:
        >>> class Tiny(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)
        ...     def forward(self, x):
        ...         return self.fc(self.body(x).mean((2, 3)))
        >>> register_adapter(Tiny, lambda m: Adapter(site="body", head="fc"))
        >>> adapter_for(Tiny()).site
        'body'
        >>> register_adapter(Tiny, lambda m: Adapter(site="body", head="fc"))
        Traceback (most recent call last):
        ...
        camviz.errors.CamvizError: Tiny already has an adapter; pass replace=True to replace it
    """
    _install()
    if cls in _ADAPTERS and not replace:
        raise CamvizError(
            f"{cls.__name__} already has an adapter; pass replace=True to replace it"
        )
    _ADAPTERS[cls] = fn


def linear_at(model: nn.Module, name: str, family: str, advice: str = HEAD_ADVICE) -> nn.Linear:
    """The ``nn.Linear`` at dotted ``name`` in ``model``, or :class:`NotAGapNetwork` saying why.

    Example:
        >>> linear_at(nn.Sequential(nn.Linear(2, 3)), "0", "Sequential").out_features
        3
    """
    mod = model.get_submodule(name)
    if not isinstance(mod, nn.Linear):
        raise NotAGapNetwork(
            f"{family}: `{name}` is {type(mod).__name__}, not a single nn.Linear, so the class "
            f"score is not a linear function of the pooled features and no map is exact. {advice}"
        )
    return mod


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of ``model``'s family (its class or the nearest registered base class).

    Raises :class:`NotAGapNetwork` naming the module path of the model's class when camviz
    does not know the family, or saying why a known family is refused.

    Example:
        >>> import torchvision
        >>> adapter_for(torchvision.models.resnet18()).site
        'layer4'
    """
    _install()
    for klass in type(model).__mro__:
        if klass in _ADAPTERS:
            return _ADAPTERS[klass](model)
    cls = type(model)
    raise NotAGapNetwork(
        f"no adapter for {cls.__module__}.{cls.__qualname__}: camviz knows "
        f"{sorted(f'{k.__module__}.{k.__qualname__}' for k in _ADAPTERS)}. Wrap it as "
        "GapNet(features, head, pool='avg') with `features` giving the last conv map and "
        "`head` the final nn.Linear, or teach camviz the family with register_adapter()."
    )


def _install() -> None:
    """Install the torchvision families' adapters once."""
    if "torchvision" not in _installed:
        _installed.append("torchvision")
        _install_torchvision()


def _simple(site: str, head: str, **kw: Any) -> AdapterFn:
    def fn(model: nn.Module) -> Adapter:
        linear_at(model, head, type(model).__name__)
        return Adapter(site=site, head=head, **kw)

    return fn


def _refuse(reason: str) -> AdapterFn:
    def fn(model: nn.Module) -> Adapter:
        raise NotAGapNetwork(f"{type(model).__name__}: {reason}")

    return fn


_MOBILENET_V3 = (
    "`classifier` is Linear -> Hardswish -> Dropout -> Linear: the non-linearity between "
    "the two layers makes the class score non-linear in the pooled features, so no map "
    "is exact. Convert it with camviz.to_gap(model) (the first Linear becomes a 1x1 conv "
    "before pooling) or fit one nn.Linear on the pooled `features` output (camviz.fit_head), "
    "or use MobileNetV2 / EfficientNet, which end in one Linear."
)
_FC_STACK = (
    "`classifier` is a stack of fully connected layers over the flattened {} feature map, "
    "not global pooling followed by one linear layer. Convert it to a GAP network with "
    "camviz.to_gap(model) (keep `features`, add a conv layer, global average pooling and one "
    "nn.Linear, then fine-tune), as in the CAM paper's VGGnet-GAP / AlexNet-GAP."
)
_SQUEEZENET = (
    "`classifier.2` (ReLU) is applied to the class maps before `classifier.3` "
    "(average pooling), so pooling is not linear in the maps and the mean of a map is "
    "not the logit. Use the maps of `classifier.1` only with care, or use a network "
    "that pools before its linear classifier."
)


def _install_torchvision() -> None:
    from torchvision import models as tvm

    for cls, fn in (
        (tvm.ResNet, _simple("layer4", "fc")),
        (tvm.DenseNet, _simple("features", "classifier", post=F.relu)),
        (tvm.GoogLeNet, _simple("inception5b", "fc")),
        (tvm.Inception3, _simple("Mixed_7c", "fc")),
        (tvm.MobileNetV2, _simple("features", "classifier.1")),
        (tvm.EfficientNet, _simple("features", "classifier.1")),
        (tvm.RegNet, _simple("trunk_output", "fc")),
        (tvm.ShuffleNetV2, _simple("conv5", "fc")),
        (tvm.MNASNet, _simple("layers", "classifier.1")),
        (tvm.ConvNeXt, _simple("features", "classifier.2", norm="classifier.0")),
        (tvm.MobileNetV3, _refuse(_MOBILENET_V3)),
        (tvm.VGG, _refuse(_FC_STACK.format("7x7"))),
        (tvm.AlexNet, _refuse(_FC_STACK.format("6x6"))),
        (tvm.SqueezeNet, _refuse(_SQUEEZENET)),
    ):
        _ADAPTERS[cls] = fn


# ---------------------------------------------------------------------------------- names


def register_model(
    name: str, loader: ModelLoader | str | None = None, *, replace: bool = False
) -> Any:
    """Make ``load_model(name, weights=..., device=...)`` call ``loader(weights=, device=)``.

    ``loader`` is a function or a ``"module:function"`` string imported on first use; without
    it, ``register_model(name)`` is a decorator. A name that exists raises unless
    ``replace=True``.

    Example:
        >>> @register_model("tiny-doc")
        ... def tiny(weights=None, device="cpu"):
        ...     return "a GapNet"
        >>> model_loader("tiny-doc")(device="cpu")
        'a GapNet'
        >>> register_model("tiny-doc", tiny)
        Traceback (most recent call last):
        ...
        camviz.errors.CamvizError: model name 'tiny-doc' is taken; pass replace=True to replace it
    """
    if loader is None:

        def decorate(fn: ModelLoader) -> ModelLoader:
            register_model(name, fn, replace=replace)
            return fn

        return decorate
    if name in _MODELS and not replace:
        raise CamvizError(f"model name {name!r} is taken; pass replace=True to replace it")
    _MODELS[name] = loader
    return loader


def model_loader(name: str) -> ModelLoader | None:
    """The loader registered for ``name`` (a lazy entry is imported now), or None.

    Example:
        >>> model_loader("no-such-model") is None
        True
    """
    entry = _MODELS.get(name)
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        _MODELS[name] = entry
    return entry


def list_models(source: str | None = None) -> list[str]:
    """The names :func:`camviz.load_model` takes, sorted: camviz's own ("camviz") and
    torchvision's classification models ("torchvision"); ``source=None`` gives all.

    Example:
        >>> {"demo", "demo-gmp"} <= set(list_models("camviz"))
        True
    """
    sources = ("camviz", "torchvision")
    if source is not None and source not in sources:
        raise CamvizError(f"source must be None or one of {sources}, got {source!r}")
    names: set[str] = set()
    if source in (None, "camviz"):
        names |= set(_MODELS)
    if source in (None, "torchvision"):
        import torchvision.models as tvm

        names |= set(tvm.list_models(module=tvm))
    return sorted(names)
