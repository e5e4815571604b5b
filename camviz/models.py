"""Models by name: ``load_model`` gives a :class:`~camviz.gapnet.GapNet` with its weights,
preprocessing and class names, from camviz's registry, torchvision's model zoo or timm's.

A name is looked up in that order: camviz's own names (the demo nets, ``efficientnet_lite0``
...), torchvision's, then timm's (``"timm/resnet50"`` always means timm's; a bare name that
torchvision lacks, such as ``"convnext_atto"``, falls back to timm when it is installed).
``weights`` may also be a checkpoint file of yours (``.pth``, ``.safetensors``, ...) for any of
these architectures (:mod:`camviz.zoo`).

Downloaded weights are verified with ``torch.load(weights_only=True)`` before torchvision
loads them; offline, a missing file raises :class:`~camviz.errors.WeightsUnavailable` saying
where to put it.

Example:
    >>> net = load_model("resnet18", weights=None, device="cpu")
    >>> net.classes[:2], net.transform.crop
    (['tench', 'goldfish'], (224, 224))
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch

from camviz.errors import UnknownModel, WeightsUnavailable
from camviz.gapnet import GapNet
from camviz.images import Preprocess
from camviz.registry import adapter_for, list_models, model_loader, timm_available
from camviz.zoo import (
    is_checkpoint,
    load_checkpoint,
    read_checkpoint,
    require_timm,
    timm_model,
)

__all__ = ["load_model", "checkpoint_path"]


def checkpoint_path(url: str) -> Path:
    """Where torch's hub cache keeps the file of a weights URL (``$TORCH_HOME``).

    Example:
        >>> checkpoint_path("https://x.org/a/resnet18-f37072fd.pth").name
        'resnet18-f37072fd.pth'
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _fetch_verified(weights: Any) -> None:
    """Make sure the weights file is in torch's cache and holds only tensors (weights_only)."""
    path = checkpoint_path(weights.url)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        match = torch.hub.HASH_REGEX.search(path.name)
        try:
            torch.hub.download_url_to_file(
                weights.url,
                str(path),
                hash_prefix=match.group(1) if match else None,
                progress=True,
            )
        except (URLError, OSError, RuntimeError) as err:
            raise WeightsUnavailable(
                f"could not download {weights} ({err}). Offline? Put {path.name} in "
                f"{path.parent} (torch's hub cache, $TORCH_HOME), or use weights=None for "
                "random weights, or load_model('demo') for the bundled demo network."
            ) from err
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsUnavailable(
            f"{path} is not a plain tensor state dict that loads with weights_only=True "
            f"({err}); delete it and try again"
        ) from err


def load_model(
    name: str,
    weights: str | Any | None = "DEFAULT",
    device: str | torch.device = "auto",
    **kwargs: Any,
) -> GapNet:
    """A model by name, wrapped, with its preprocessing and category names.

    ``name`` is one of :func:`camviz.list_models`: a camviz model ("demo", "demo-gmp",
    "efficientnet_lite0"), a torchvision classification model ("resnet50", ...) or a timm one
    ("timm/resnet50", or a bare name torchvision lacks). ``weights`` is "DEFAULT", a weights
    name ("IMAGENET1K_V2"), a torchvision weights enum member, None for random weights
    (transform and names still come from the default weights' metadata), or a checkpoint file
    of yours ("model.pth", "model.safetensors": its head's size gives the number of classes;
    ``classes=`` names them). Offline with no cached weights raises
    :class:`WeightsUnavailable`.

    The model comes in eval mode (camviz built it, so nothing of the caller's is changed):
    ``net.model(x)`` gives what ``net.run(x)`` gives.

    Example:
        >>> load_model("resnet5O")
        Traceback (most recent call last):
        ...
        camviz.errors.UnknownModel: unknown model 'resnet5O'. Did you mean resnet50, ...
    """
    net = _load(name, weights, device, **kwargs)
    net.model.eval()
    return net


def _load(name: str, weights: Any, device: str | torch.device, **kwargs: Any) -> GapNet:
    loader = model_loader(name)
    if loader is not None:
        return loader(weights=weights, device=device, **kwargs)
    if name.startswith("timm/"):
        return timm_model(name.removeprefix("timm/"), weights, device, **kwargs)
    if name in list_models("torchvision"):
        return _torchvision(name, weights, device, **kwargs)
    if timm_available() and require_timm().is_model(name.split(".")[0]):
        return timm_model(name, weights, device, **kwargs)
    close = difflib.get_close_matches(name, list_models(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    extra = "" if timm_available() else " timm's models need pip install 'camviz[timm]'."
    raise UnknownModel(
        f"unknown model {name!r}.{hint} Use a name from camviz.list_models() (camviz's own "
        f"models, torchvision's and timm's classification models).{extra}"
    )


def _torchvision(name: str, weights: Any, device: str | torch.device, **kwargs: Any) -> GapNet:
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    if is_checkpoint(weights):
        return _torchvision_checkpoint(name, weights, enum.DEFAULT, device, **kwargs)
    if weights is None:
        meta_w, chosen = enum.DEFAULT, None
    elif isinstance(weights, str):
        try:
            chosen = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
        except KeyError:
            raise WeightsUnavailable(
                f"{name} has no weights {weights!r}; choose from {[w.name for w in enum]}"
            ) from None
        meta_w = chosen
    else:
        meta_w = chosen = weights
    if chosen is not None:
        _fetch_verified(chosen)
    model = tvm.get_model(name, weights=chosen, **kwargs)
    categories = meta_w.meta.get("categories")
    n_out = model.get_submodule(adapter_for(model).head).out_features
    classes = categories if categories and len(categories) == n_out else None
    transform = Preprocess.from_torchvision(meta_w.transforms())
    return GapNet.from_model(model, classes=classes, transform=transform, device=device)


def _torchvision_checkpoint(name: str, path: Any, meta_w: Any, device: str | torch.device,
                            classes: Any = None, **kwargs: Any) -> GapNet:
    import torchvision.models as tvm

    def build(**kw: Any) -> torch.nn.Module:
        return tvm.get_model(name, weights=None, **kwargs, **kw)

    model = load_checkpoint(build, read_checkpoint(path), name)
    n_out = model.get_submodule(adapter_for(model).head).out_features
    categories = meta_w.meta.get("categories") or []
    names = list(classes) if classes is not None else (
        categories if len(categories) == n_out else None)
    transform = Preprocess.from_torchvision(meta_w.transforms())
    return GapNet.from_model(model, classes=names, transform=transform, device=device)
