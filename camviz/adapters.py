"""Model families: where each keeps its features F and its head, and how F is laid out.

An :class:`Adapter` names the parts; the functions here read them: torchvision's families
(:func:`torchvision_families`), timm's (:func:`timm_families`, :func:`timm_adapter`, through
timm's own ``forward_features`` / ``forward_head`` / ``get_classifier``), the conversion of raw
features to F (B, K, h, w) (:func:`grid_features`) and the per-image LayerNorm fold
(:func:`fold_norm`). The tables that map a model class to its adapter are in
:mod:`camviz.registry`.

Example:
    >>> import torchvision
    >>> torchvision_families()[torchvision.models.ResNet](torchvision.models.resnet18()).site
    'layer4'
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camviz.errors import NotAGapNetwork
from camviz.hooks import called_modules, eval_mode
from camviz.maps import POOLS, global_pool

__all__ = [
    "Adapter",
    "AdapterFn",
    "HEAD_ADVICE",
    "check_head_call",
    "fold_norm",
    "grid_features",
    "head_path_extras",
    "linear_at",
    "timm_adapter",
    "timm_families",
    "torchvision_families",
]

Tensor = torch.Tensor


@dataclass(frozen=True)
class Adapter:
    """Where a model keeps its GAP structure.

    ``site``: dotted name of the module whose output is F (before ``post``), hooked during
    ``model(x)``; or, with ``head_call``, the name of the model's method that gives F (timm's
    ``forward_features``), whose output goes through ``model.<head_call>`` (``forward_head``)
    for the logits, so no hook is needed. ``head``: dotted name of the final ``nn.Linear``;
    ``post``: an elementwise function the model applies to F before pooling (DenseNet's ReLU);
    ``norm``: dotted name of a LayerNorm applied to the pooled vector (ConvNeXt, a ViT's
    ``fc_norm``), folded per image into F and into the head; ``pool``: "avg" or "max".
    ``layout`` of the raw F: "nchw", "nhwc" (Swin's tokens on their grid) or "tokens"
    ((B, N, C), the first ``prefix_tokens`` of which (class, register tokens) the pooling
    skips; the rest are the patch grid). ``passthrough``: modules the head call may run
    besides ``norm`` and ``head`` (the pooling module): anything else it runs is refused.

    Example:
        >>> Adapter(site="layer4", head="fc").pool
        'avg'
    """

    site: str
    head: str
    post: Callable[[Tensor], Tensor] | None = None
    norm: str | None = None
    pool: str = "avg"
    layout: str = "nchw"
    prefix_tokens: int = 0
    head_call: str | None = None
    passthrough: tuple[str, ...] = ()


AdapterFn = Callable[[nn.Module], Adapter]

HEAD_ADVICE = (
    "Replace it by one nn.Linear (and retrain it on frozen features), or wrap the network "
    "yourself with GapNet(features, head)."
)


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
_VIT = (
    "`heads.head` reads the class token alone, not a pooling of the patch tokens, so the "
    "class score is not a mean over the image and no map is exact. Use a network that pools "
    "its patch tokens, e.g. timm's ViTs with global_pool='avg' or a Swin transformer."
)
_MAXVIT = (
    "`classifier` is pooling -> LayerNorm -> Linear -> Tanh -> Linear: the Tanh between the "
    "two Linear layers makes the class score non-linear in the pooled features, so no map "
    "is exact. Fit one nn.Linear on the pooled, normalised features (camviz.fit_head), or use "
    "a Swin transformer, which ends in one Linear."
)
_SQUEEZENET = (
    "`classifier.2` (ReLU) is applied to the class maps before `classifier.3` "
    "(average pooling), so pooling is not linear in the maps and the mean of a map is "
    "not the logit. Use the maps of `classifier.1` only with care, or use a network "
    "that pools before its linear classifier."
)


def torchvision_families() -> dict[type, AdapterFn]:
    """torchvision's model classes and their adapters (or refusals, saying why).

    Example:
        >>> import torchvision
        >>> torchvision.models.VGG in torchvision_families()
        True
    """
    from torchvision import models as tvm

    return dict((
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
        # v1 and v2: the final LayerNorm is per token, before pooling, so F is its output
        (tvm.SwinTransformer, _simple("norm", "head", layout="nhwc")),
        (tvm.VisionTransformer, _refuse(_VIT)),
        (tvm.MaxVit, _refuse(_MAXVIT)),
        (tvm.MobileNetV3, _refuse(_MOBILENET_V3)),
        (tvm.VGG, _refuse(_FC_STACK.format("7x7"))),
        (tvm.AlexNet, _refuse(_FC_STACK.format("6x6"))),
        (tvm.SqueezeNet, _refuse(_SQUEEZENET)),
    ))


# ---------------------------------------------------------------------------------- timm

_TIMM_ADVICE = (
    "Fit one nn.Linear on the pooled features instead (camviz.fit_head), or build the model "
    "with a plain pooling head (timm.create_model(name, global_pool='avg'))."
)
_TIMM_POOLS = {
    "token": "the head reads the class token alone, not a pooling of the patch tokens, so the "
    "class score is not a mean over the image",
    "map": "the head pools with attention (its weights depend on the image), not an average",
    "avgmax": "the head averages average and max pooling, so the class score is neither a "
    "mean nor a max of one map",
    "catavgmax": "the head concatenates average and max pooling, so the class score mixes "
    "a mean and a max of two different maps",
    "": "the model has no global pooling before its classifier",
}
_TIMM_MOBILENET_V3 = (
    "`conv_head` (a 1x1 Conv2d) and its activation run after `global_pool`, between the "
    "pooling and `classifier`, so the class score is not linear in the pooled features and no "
    "map is exact. Convert it with camviz.to_gap(model) (the conv head moves before the "
    "pooling, then fine-tune) or fit one nn.Linear on the pooled features (camviz.fit_head), "
    "or use mobilenetv2_100 / efficientnet_b0, which end in one Linear."
)


def _module_name(model: nn.Module, module: nn.Module) -> str | None:
    return next((n for n, m in model.named_modules() if m is module), None)


def _timm_pool(model: nn.Module) -> tuple[str, str | None]:
    """The head's pooling kind (timm's pool_type, "fast" prefix dropped) and its module."""
    for name in ("global_pool", "head.global_pool"):
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(mod, nn.AdaptiveMaxPool2d):
            return "max", name
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            return "avg", name
        kind = getattr(mod, "pool_type", None)
        if isinstance(kind, str):
            return (kind.lower().removeprefix("fast") or "avg") if kind else "", name
    kind = getattr(model, "global_pool", "")
    return (kind.lower() if isinstance(kind, str) else type(kind).__name__), None


def _timm_norm(model: nn.Module, family: str) -> str | None:
    """The LayerNorm applied to the pooled vector (ConvNeXt's head.norm, a ViT's fc_norm)."""
    for name in ("head.norm", "fc_norm"):
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(mod, nn.Identity):
            continue
        if not isinstance(mod, nn.LayerNorm):
            raise NotAGapNetwork(
                f"{family}: `{name}` ({type(mod).__name__}) runs between the pooling and the "
                "classifier and is not a LayerNorm, which camviz folds exactly. "
                + _TIMM_ADVICE
            )
        return name
    return None


def timm_adapter(model: nn.Module) -> Adapter:
    """The adapter of a timm classifier, read from timm's own interface: F is
    ``model.forward_features(x)``, the logits ``model.forward_head(F)``; the pooling comes from
    its ``global_pool``, the Linear from ``get_classifier()``, a LayerNorm after pooling is
    folded, a ViT's ``num_prefix_tokens`` are left out of the patch grid. Raises
    :class:`NotAGapNetwork` naming the part that is not pooling -> (LayerNorm) -> Linear.

    Example:
        >>> class Tiny(nn.Module):  # timm's interface, in small
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body, self.global_pool = nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1)
        ...         self.fc = nn.Linear(4, 2)
        ...     def forward_features(self, x): return self.body(x)
        ...     def forward_head(self, f): return self.fc(self.global_pool(f).flatten(1))
        ...     def forward(self, x): return self.forward_head(self.forward_features(x))
        ...     def get_classifier(self): return self.fc
        >>> a = timm_adapter(Tiny())
        >>> a.site, a.head_call, a.head, a.pool, a.passthrough
        ('forward_features', 'forward_head', 'fc', 'avg', ('global_pool',))
    """
    family = type(model).__name__
    for attr in ("forward_features", "forward_head", "get_classifier"):
        if not callable(getattr(model, attr, None)):
            raise NotAGapNetwork(f"{family}: a timm model without {attr}(); {HEAD_ADVICE}")
    clf = model.get_classifier()
    head = _module_name(model, clf)
    if not isinstance(clf, nn.Linear) or head is None:
        hint = " (built with num_classes=0?)" if isinstance(clf, nn.Identity) else ""
        raise NotAGapNetwork(
            f"{family}: its classifier `{head}` is {type(clf).__name__}{hint}, not one "
            f"nn.Linear, so no map is exact. {HEAD_ADVICE}"
        )
    kind, pool_module = _timm_pool(model)
    if kind not in POOLS:
        why = _TIMM_POOLS.get(kind, f"its global pooling is {kind!r}, not 'avg' or 'max'")
        raise NotAGapNetwork(f"{family}: global_pool={kind!r}: {why}; no map is exact. "
                             + _TIMM_ADVICE)
    if getattr(model, "pool_include_prefix", False):
        raise NotAGapNetwork(
            f"{family}: the pooling includes the class token (pool_include_prefix=True), "
            "which has no place in the image, so no map of the patches is exact. "
            + _TIMM_ADVICE
        )
    pre = getattr(getattr(model, "head", None), "pre_logits", None)
    if isinstance(pre, nn.Module) and not isinstance(pre, nn.Identity):
        raise NotAGapNetwork(
            f"{family}: `head.pre_logits` ({type(pre).__name__}: an MLP layer with an "
            "activation) runs between the pooling and `head.fc`, so the class score is not "
            "linear in the pooled features and no map is exact. " + _TIMM_ADVICE
        )
    tokens = hasattr(model, "num_prefix_tokens")
    layout = "tokens" if tokens else (
        "nhwc" if str(getattr(model, "output_fmt", "NCHW")) == "NHWC" else "nchw")
    return Adapter(
        site="forward_features", head=head, norm=_timm_norm(model, family), pool=kind,
        layout=layout, prefix_tokens=int(getattr(model, "num_prefix_tokens", 0) or 0),
        head_call="forward_head", passthrough=(pool_module,) if pool_module else (),
    )


def timm_families() -> dict[type, AdapterFn]:
    """timm's classifier classes camviz is tested on, and their adapters (timm must import).

    Example:
        >>> import timm.models.resnet
        >>> timm_families()[timm.models.resnet.ResNet] is timm_adapter
        True
    """
    out: dict[type, AdapterFn] = {}
    families = {  # timm module -> its classifier classes camviz is tested on
        "resnet": ("ResNet",), "efficientnet": ("EfficientNet",), "regnet": ("RegNet",),
        "convnext": ("ConvNeXt",), "densenet": ("DenseNet",), "inception_v3": ("InceptionV3",),
        "swin_transformer": ("SwinTransformer",), "vision_transformer": ("VisionTransformer",),
    }
    for mod, names in families.items():
        module = importlib.import_module(f"timm.models.{mod}")
        for name in names:
            out[getattr(module, name)] = timm_adapter
    out[importlib.import_module("timm.models.mobilenetv3").MobileNetV3] = _timm_mobilenet_v3
    return out


def _timm_mobilenet_v3(model: nn.Module) -> Adapter:
    if isinstance(getattr(model, "conv_head", None), nn.Identity):
        return timm_adapter(model)
    raise NotAGapNetwork(f"{type(model).__name__}: {_TIMM_MOBILENET_V3}")


def head_path_extras(adapter: Adapter, called: list[tuple[str, nn.Module]]) -> list[str]:
    """The modules a head call ran (``called``: names and modules, in order) that are not the
    pooling, the folded LayerNorm, the Linear, or shape-only layers (Dropout, Flatten,
    Identity), each as "`name` (Type)": what breaks the GAP structure.

    Example:
        >>> a = Adapter(site="forward_features", head="fc", head_call="forward_head",
        ...             passthrough=("global_pool",))
        >>> head_path_extras(a, [("global_pool", nn.Identity()), ("act", nn.ReLU()),
        ...                      ("fc", nn.Linear(1, 1))])
        ['`act` (ReLU)']
    """
    known = [n for n in (adapter.head, adapter.norm, *adapter.passthrough) if n]
    out = []
    for name, mod in called:
        if isinstance(mod, (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten)):
            continue
        if any(name == k or name.startswith(k + ".") or k.startswith(name + ".")
               for k in known):
            continue  # the known parts, their children, and the containers holding them
        out.append(f"`{name}` ({type(mod).__name__})")
    return out


# ---------------------------------------------------------------------------------- features


def grid_features(raw: Any, adapter: Adapter, input_hw: Sequence[int],
                  units: int | None = None) -> Tensor:
    """The raw features a model gave, as F (B, K, h, w) float32: NCHW as is, NHWC permuted,
    tokens (B, N, C) without the ``prefix_tokens`` reshaped to the patch grid (h / w follows
    the input's aspect), then the adapter's ``post``. ``units``: the K the head reads.

    Example:
        >>> a = Adapter(site="f", head="h", layout="tokens", prefix_tokens=1)
        >>> grid_features(torch.zeros(2, 1 + 2 * 3, 5), a, (32, 48)).shape
        torch.Size([2, 5, 2, 3])
    """
    where = f"`{adapter.site}`"
    if not isinstance(raw, Tensor):
        raise NotAGapNetwork(f"{where} gave {type(raw).__name__}, not a feature tensor")
    want = 3 if adapter.layout == "tokens" else 4
    if raw.ndim != want:
        what = "(B, N, C) tokens" if want == 3 else f"a {adapter.layout.upper()} feature map"
        raise NotAGapNetwork(
            f"{where} gave {tuple(raw.shape)}, not {what}; give GapNet the module whose "
            "output is the last conv map (or tokens with layout='tokens')"
        )
    f = raw.float()
    if adapter.layout == "nhwc":
        f = f.permute(0, 3, 1, 2)
    elif adapter.layout == "tokens":
        f = _token_grid(f[:, adapter.prefix_tokens:], input_hw, where)
    if units is not None and f.shape[1] != units:
        raise NotAGapNetwork(
            f"{where} gives {f.shape[1]} channels but the head reads {units}: something "
            "between them changes the features (a conv or MLP head after pooling?)"
        )
    return adapter.post(f) if adapter.post is not None else f


def _token_grid(tokens: Tensor, input_hw: Sequence[int], where: str) -> Tensor:
    b, n, c = tokens.shape
    ih, iw = int(input_hw[0]), int(input_hw[1])
    h = max(1, round(math.sqrt(n * ih / iw)))
    w = n // h
    if h * w != n:
        raise NotAGapNetwork(f"{where} gave {n} patch tokens, which is no grid of the "
                             f"{ih}x{iw} input's aspect")
    return tokens.transpose(1, 2).reshape(b, c, h, w)


def fold_norm(f: Tensor, norm: nn.Module | None, pool: str) -> Tensor:
    """A LayerNorm over the channels of the pooled vector, applied per image to F itself (its
    mean and std subtracted and divided out), so that pooling F gives the normalised vector;
    its gain and bias go into the head (:func:`camviz.gapnet.folded_head`).

    Example:
        >>> f = torch.rand(2, 4, 3, 3)
        >>> g = fold_norm(f, nn.LayerNorm(4, elementwise_affine=False), "avg")
        >>> torch.allclose(g.mean((2, 3)), nn.LayerNorm(4, elementwise_affine=False)(
        ...     f.mean((2, 3))), atol=1e-5)
        True
    """
    if norm is None:
        return f
    pooled = global_pool(f, pool)
    mu = pooled.mean(dim=1, keepdim=True)
    var = pooled.var(dim=1, unbiased=False, keepdim=True)
    eps = float(getattr(norm, "eps", 1e-6))
    return (f - mu[..., None, None]) / torch.sqrt(var + eps)[..., None, None]


def check_head_call(model: nn.Module, adapter: Adapter, x: Tensor) -> None:
    """For an adapter with a ``head_call``: raise :class:`NotAGapNetwork` when the head call
    runs anything between the pooling and the Linear but a folded LayerNorm (naming it), or
    when the two calls do not give ``model(x)``.

    Example:
        >>> class Two(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body, self.act, self.fc = nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Linear(4, 2)
        ...     def forward_features(self, x): return self.body(x)
        ...     def forward_head(self, f): return self.fc(self.act(f.mean((2, 3))))
        ...     def forward(self, x): return self.forward_head(self.forward_features(x))
        >>> a = Adapter(site="forward_features", head="fc", head_call="forward_head")
        >>> check_head_call(Two(), a, torch.rand(1, 3, 8, 8))
        Traceback (most recent call last):
        ...
        camviz.errors.NotAGapNetwork: Two: forward_head() runs `act` (ReLU) between the pooling ...
    """
    family = type(model).__name__
    x = x[:1]
    with torch.inference_mode(), eval_mode(model):
        raw = getattr(model, adapter.site)(x)
        with called_modules(model) as called:
            out = getattr(model, adapter.head_call)(raw)
        full = model(x)
    extras = head_path_extras(adapter, called)
    if extras:
        raise NotAGapNetwork(
            f"{family}: {adapter.head_call}() runs {', '.join(extras)} between the pooling and "
            f"`{adapter.head}`, so the class score is not linear in the pooled features and no "
            f"map is exact. {HEAD_ADVICE}"
        )
    if not (isinstance(out, Tensor) and isinstance(full, Tensor) and out.shape == full.shape
            and torch.allclose(out.float(), full.float(), rtol=1e-4, atol=1e-4)):
        raise NotAGapNetwork(
            f"{family}: {adapter.head_call}({adapter.site}(x)) differs from model(x), so the "
            f"logits camviz explains would not be the model's. {HEAD_ADVICE}"
        )
