"""Turn a classifier that does not end in global average pooling into one that does (GAP).

The CAM paper makes its maps from AlexNet and VGGnet by converting them (AlexNet-GAP,
VGGnet-GAP): drop the fully connected layers and the last max pooling, add a 3 x 3 convolution
(1024 units) with a ReLU, global average pooling and one linear layer, then fine-tune.
:func:`to_gap` does that for torchvision's VGG (with and without batch norm) and AlexNet. For
MobileNetV3 (torchvision and timm), whose head is pool -> Linear -> Hardswish -> Linear, it moves
the first linear layer before the pooling as a 1 x 1 convolution with the same weights, so
fine-tuning starts from the trained head (the pre-activations pool to exactly the old ones; the
logits are the old ones when the feature map is 1 x 1, and close to them otherwise).

The result is a :class:`GapConverted` (``features -> extra -> mean over x, y -> fc``) that
``camviz.GapNet.from_model`` wraps; ``model.new_layers`` names the freshly initialised layers
(fine-tuning gives them a higher learning rate, see :mod:`camviz.finetune`). A converted model
is saved with :func:`save_converted` (safetensors; the architecture as JSON metadata) and loaded
back, as a GapNet, with :func:`load_converted`. Other families: :func:`register_converter`.

Example:
    >>> import torchvision
    >>> gap = to_gap(torchvision.models.alexnet(num_classes=10), width=64)
    >>> gap(torch.zeros(1, 3, 224, 224)).shape, gap.new_layers
    (torch.Size([1, 10]), ('extra.', 'fc.'))
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from camviz.errors import CamvizError, NotAGapNetwork, WeightsUnavailable
from camviz.files import temp_name
from camviz.gapnet import GapNet
from camviz.images import Preprocess
from camviz.registry import Adapter, register_adapter

FORMAT = 1
META_KEY = "camviz"


class GapConverted(nn.Module):
    """``features -> extra -> global average pooling -> dropout -> fc``: a GAP network.

    ``features`` is the source network's trunk (a copy), ``extra`` the conv layer(s) added or
    moved in front of the pooling, whose output is the map F of the CAM identity, ``fc`` one
    ``nn.Linear``. ``conversion`` records how it was made (JSON-able: family, source, width, ...)
    and ``new_layers`` the parameter-name prefixes of the freshly initialised layers.

    Example:
        >>> m = GapConverted(nn.Identity(), nn.Conv2d(3, 4, 1), nn.Linear(4, 2))
        >>> m(torch.zeros(2, 3, 5, 5)).shape
        torch.Size([2, 2])
    """

    def __init__(
        self, features: nn.Module, extra: nn.Module, fc: nn.Linear, dropout: float = 0.0,
        conversion: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.features, self.extra, self.fc = features, extra, fc
        self.dropout = nn.Dropout(dropout)
        self.conversion: dict[str, Any] = dict(conversion or {})

    @property
    def new_layers(self) -> tuple[str, ...]:
        return tuple(self.conversion.get("new_layers", ()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.extra(self.features(x))
        return self.fc(self.dropout(f.mean(dim=(2, 3))))


# ---------------------------------------------------------------------------------- recipes


def _last(seq: nn.Module, kind: type) -> nn.Module | None:
    found = [m for m in seq.modules() if isinstance(m, kind)]
    return found[-1] if found else None


def _fresh_fc(k: int, n: int, like: torch.Tensor) -> nn.Linear:
    fc = nn.Linear(k, n).to(like)
    nn.init.normal_(fc.weight, 0.0, 0.01)
    nn.init.zeros_(fc.bias)
    return fc


def fc_stack_to_gap(model: nn.Module, width: int = 1024, num_classes: int | None = None
                    ) -> GapConverted:
    """The paper's recipe for a ``features`` (ending in max pooling) + FC ``classifier`` net.

    Keeps a copy of ``model.features`` without its last ``nn.MaxPool2d``, adds ``conv 3x3
    (width, stride 1, pad 1) -> ReLU`` as ``extra`` and a new ``fc`` (``num_classes``, default
    the classifier's). Both are new; the trunk keeps its trained weights.

    Example:
        >>> m = nn.Module()
        >>> m.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2))
        >>> m.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 7 * 7, 5))
        >>> gap = fc_stack_to_gap(m, width=32)
        >>> gap.extra[0], gap.fc.out_features
        (Conv2d(8, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)), 5)
    """
    name = type(model).__name__
    feats = getattr(model, "features", None)
    if not isinstance(feats, nn.Sequential) or not isinstance(feats[-1], nn.MaxPool2d):
        raise NotAGapNetwork(
            f"{name}: the paper's GAP conversion needs `features`, an nn.Sequential ending in "
            "nn.MaxPool2d (as in torchvision's VGG and AlexNet). Build the GAP network yourself: "
            "GapConverted(trunk, nn.Sequential(conv, nn.ReLU()), nn.Linear(width, classes))."
        )
    conv = _last(feats, nn.Conv2d)
    last_fc = _last(getattr(model, "classifier", nn.Sequential()), nn.Linear)
    if conv is None or (num_classes is None and last_fc is None):
        raise NotAGapNetwork(f"{name}: no conv layer in `features` or no nn.Linear in "
                             "`classifier`; give num_classes= or convert it by hand")
    n = num_classes if num_classes is not None else last_fc.out_features
    extra = nn.Sequential(nn.Conv2d(conv.out_channels, width, 3, padding=1), nn.ReLU(inplace=True))
    extra = extra.to(conv.weight)
    nn.init.kaiming_normal_(extra[0].weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(extra[0].bias)
    trunk = copy.deepcopy(feats[:-1])
    return GapConverted(trunk, extra, _fresh_fc(width, n, conv.weight), conversion={
        "recipe": "paper", "width": width, "num_classes": n, "dropout": 0.0,
        "new_layers": ["extra.", "fc."],
    })


def _linear_as_conv(lin: nn.Linear) -> nn.Conv2d:
    conv = nn.Conv2d(lin.in_features, lin.out_features, 1, bias=lin.bias is not None).to(lin.weight)
    with torch.no_grad():
        conv.weight.copy_(lin.weight[:, :, None, None])
        if lin.bias is not None:
            conv.bias.copy_(lin.bias)
    return conv


def _moved_head(features: nn.Module, first: nn.Module, act: nn.Module, last: nn.Linear,
                dropout: float, num_classes: int | None) -> GapConverted:
    conv = first if isinstance(first, nn.Conv2d) else _linear_as_conv(first)
    fc, new = copy.deepcopy(last), []
    if num_classes is not None and num_classes != last.out_features:
        fc, new = _fresh_fc(last.in_features, num_classes, last.weight), ["fc."]
    return GapConverted(copy.deepcopy(features), nn.Sequential(copy.deepcopy(conv),
                        copy.deepcopy(act)), fc, dropout, conversion={
        "recipe": "moved-head", "width": conv.out_channels, "num_classes": fc.out_features,
        "dropout": dropout, "new_layers": new, "moved_layers": ["extra.0."],
    })


def mobilenet_v3_to_gap(model: nn.Module, width: int | None = None,
                        num_classes: int | None = None) -> GapConverted:
    """torchvision's MobileNetV3: ``classifier = Linear -> Hardswish -> Dropout -> Linear``
    becomes ``features -> conv 1x1 (the first Linear's weights) -> Hardswish -> GAP -> Dropout
    -> Linear``. ``width`` is ignored (the conv keeps the Linear's width); a ``num_classes``
    other than the model's replaces the last Linear by a new one.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.mobilenet_v3_small(num_classes=7)
        >>> g = mobilenet_v3_to_gap(m)
        >>> torch.equal(g.extra[0].weight[:, :, 0, 0], m.classifier[0].weight), g.new_layers
        (True, ())
    """
    cls = getattr(model, "classifier", None)
    kinds = [type(m).__name__ for m in cls] if isinstance(cls, nn.Sequential) else []
    if (len(kinds) != 4 or kinds[0] != "Linear" or kinds[2] != "Dropout"
            or kinds[3] != "Linear"):
        raise NotAGapNetwork(
            f"{type(model).__name__}: expected `classifier` Linear -> activation -> Dropout -> "
            f"Linear (torchvision's MobileNetV3), got {kinds}; convert it by hand with "
            "GapConverted(features, extra, fc)"
        )
    return _moved_head(model.features, cls[0], cls[1], cls[3], float(cls[2].p), num_classes)


def timm_mobilenetv3_to_gap(model: nn.Module, width: int | None = None,
                            num_classes: int | None = None) -> GapConverted:
    """timm's MobileNetV3: its ``conv_head`` (a 1 x 1 conv applied after pooling) moves before
    the pooling, followed by ``act2``; ``classifier`` stays the head. ``width`` is ignored.

    Example:
        >>> import timm  # doctest: +SKIP
        >>> timm_mobilenetv3_to_gap(timm.create_model("mobilenetv3_small_100")).fc  # doctest: +SKIP
        Linear(in_features=1024, out_features=1000, bias=True)
    """
    pool = getattr(getattr(model, "global_pool", None), "pool_type", "avg")
    norm = getattr(model, "norm_head", nn.Identity())
    if pool != "avg" or not isinstance(norm, nn.Identity) or not isinstance(
            getattr(model, "classifier", None), nn.Linear):
        raise NotAGapNetwork(
            f"timm {type(model).__name__}: converted only with average pooling, no norm_head "
            f"and an nn.Linear classifier (got pool {pool!r}, norm_head {type(norm).__name__}); "
            "create the model with those settings or convert it by hand"
        )
    trunk = nn.Sequential(model.conv_stem, model.bn1, model.blocks)
    return _moved_head(trunk, model.conv_head, model.act2, model.classifier,
                       float(getattr(model, "drop_rate", 0.0)), num_classes)


# ---------------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """How :func:`to_gap` converts one model family, and how :func:`load_converted` rebuilds it.

    ``convert(model, width, num_classes) -> GapConverted``; ``describe(model)`` gives a JSON-able
    dict naming the source architecture (None: it cannot be rebuilt); ``rebuild(source)`` makes
    a source model of that architecture with any weights (it may run on the meta device).
    """

    name: str
    convert: Callable[[nn.Module, int, int | None], GapConverted]
    describe: Callable[[nn.Module], dict[str, Any] | None] = lambda m: None
    rebuild: Callable[[dict[str, Any]], nn.Module] | None = None


_FAMILIES: dict[type, Family] = {}
_INSTALLED: set[str] = set()


def register_converter(cls: type, family: Family) -> None:
    """Teach :func:`to_gap` (and :func:`load_converted`) a model family.

    Example:
        >>> class Mine(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2))
        ...         self.classifier = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))
        >>> register_converter(Mine, Family("mine", fc_stack_to_gap))
        >>> to_gap(Mine(), width=8).fc
        Linear(in_features=8, out_features=3, bias=True)
    """
    _FAMILIES[cls] = family


_TV_NAMES = {
    "VGG": [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")],
    "AlexNet": ["alexnet"],
    "MobileNetV3": ["mobilenet_v3_large", "mobilenet_v3_small"],
}


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _tv_describe(model: nn.Module) -> dict[str, Any] | None:
    from torchvision import models as tvm

    last = _last(model.classifier, nn.Linear)
    n = last.out_features if last is not None else 1000
    own = _shapes(model)
    for name in _TV_NAMES.get(type(model).__name__, []):
        with torch.device("meta"):
            cand = tvm.get_model(name, weights=None, num_classes=n)
        if _shapes(cand) == own:
            return {"torchvision": name, "num_classes": n}
    return None


def _tv_rebuild(source: dict[str, Any]) -> nn.Module:
    from torchvision import models as tvm

    name = source.get("torchvision")
    if name not in {n for names in _TV_NAMES.values() for n in names}:
        raise WeightsUnavailable(f"unknown torchvision source {name!r} in the file's metadata")
    return tvm.get_model(name, weights=None, num_classes=int(source["num_classes"]))


def _timm_describe(model: nn.Module) -> dict[str, Any] | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture")
    if not arch:
        return None
    return {"timm": arch, "num_classes": int(model.num_classes),
            "drop_rate": float(model.drop_rate)}


def _timm_rebuild(source: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError as err:
        raise WeightsUnavailable(
            "this converted model comes from timm, which is not installed: "
            "pip install 'camviz[timm]'") from err
    if not isinstance(source.get("timm"), str) or not timm.is_model(source["timm"]):
        raise WeightsUnavailable(f"unknown timm model {source.get('timm')!r} in the metadata")
    return timm.create_model(source["timm"], pretrained=False,
                             num_classes=int(source["num_classes"]),
                             drop_rate=float(source.get("drop_rate", 0.0)))


def _install() -> None:
    if "torchvision" not in _INSTALLED:
        from torchvision import models as tvm

        paper = Family("torchvision", fc_stack_to_gap, _tv_describe, _tv_rebuild)
        register_converter(tvm.VGG, paper)
        register_converter(tvm.AlexNet, paper)
        register_converter(tvm.MobileNetV3, Family(
            "torchvision-mobilenetv3", mobilenet_v3_to_gap, _tv_describe, _tv_rebuild))
        _INSTALLED.add("torchvision")
    if "timm" not in _INSTALLED and "timm" in sys.modules:  # a timm model means timm is loaded
        from timm.models import MobileNetV3

        register_converter(MobileNetV3, Family(
            "timm-mobilenetv3", timm_mobilenetv3_to_gap, _timm_describe, _timm_rebuild))
        _INSTALLED.add("timm")


def _family_of(model: nn.Module) -> Family:
    _install()
    for klass in type(model).__mro__:
        if klass in _FAMILIES:
            return _FAMILIES[klass]
    known = sorted({k.__name__ for k in _FAMILIES})
    raise NotAGapNetwork(
        f"to_gap does not know {type(model).__name__}; it converts {known}. If the model "
        "already ends in global average pooling and one nn.Linear, wrap it with "
        "camviz.GapNet.from_model(model) or GapNet(features, head); otherwise build the GAP "
        "network as GapConverted(features, extra, fc), or teach to_gap the family with "
        "camviz.convert.register_converter(cls, Family(name, convert))."
    )


#: Families registered by a module that a converted file may name before it is imported.
_FAMILY_MODULES = {"demo-fc": "camviz.demo.fcnet"}


def _family_named(name: str) -> Family:
    if name.startswith("timm"):
        with contextlib.suppress(ImportError):
            import timm  # noqa: F401  (loaded, so that _install registers timm's families)
    if name in _FAMILY_MODULES:
        importlib.import_module(_FAMILY_MODULES[name])
    _install()
    for fam in _FAMILIES.values():
        if fam.name == name:
            return fam
    raise WeightsUnavailable(
        f"the file was converted from family {name!r}, which no loaded module registers; import "
        f"the module that registers it (known: {sorted({f.name for f in _FAMILIES.values()})})"
    )


def to_gap(model: nn.Module, width: int = 1024, num_classes: int | None = None) -> GapConverted:
    """Convert ``model`` into a GAP network (a new module; ``model`` is left unchanged).

    VGG / AlexNet (and families registered with the same recipe): the paper's conv 3x3
    (``width`` units) -> ReLU -> GAP -> Linear in place of the last max pooling and the FC
    stack; both layers are new. MobileNetV3 (torchvision, timm): the head's first Linear as a
    1 x 1 conv before the pooling, weights kept. ``num_classes`` (default: the model's) sets
    the new head's classes. Which layers are new: ``result.new_layers``; everything about the
    conversion: ``result.conversion``. Unknown families raise :class:`NotAGapNetwork`.

    Example:
        >>> import torchvision
        >>> to_gap(torchvision.models.resnet18())
        Traceback (most recent call last):
        ...
        camviz.errors.NotAGapNetwork: to_gap does not know ResNet; it converts ...
    """
    fam = _family_of(model)
    out = fam.convert(model, width, num_classes)
    out.conversion.update(family=fam.name, source=fam.describe(model))
    return out


# ---------------------------------------------------------------------------------- files


def _rebuild(meta: dict[str, Any]) -> GapConverted:
    fam = _family_named(str(meta.get("family")))
    if fam.rebuild is None or not isinstance(meta.get("source"), dict):
        raise WeightsUnavailable(f"family {fam.name!r} cannot be rebuilt from metadata")
    width, n = int(meta["width"]), int(meta["num_classes"])
    with torch.device("meta"):  # shapes only: the file's tensors are assigned below
        model = to_gap(fam.rebuild(meta["source"]), width=width, num_classes=n)
    model.dropout.p = float(meta.get("dropout", 0.0))
    return model


def save_converted(model: GapConverted, path: str | os.PathLike[str],
                   classes: Sequence[str] | None = None, transform: Preprocess | None = None,
                   **extra: Any) -> Path:
    """Write a converted model's weights and how to rebuild it as one safetensors file,
    atomically. The metadata (JSON under the key "camviz") is ``model.conversion`` plus
    ``classes``, ``transform`` and ``extra`` (JSON-able: training settings, ...).

    Example:
        >>> import tempfile, torchvision
        >>> p = save_converted(to_gap(torchvision.models.alexnet(num_classes=3), width=8),
        ...                    tempfile.mkdtemp() + "/a.safetensors")
        >>> load_converted(p, device="cpu").num_classes
        3
    """
    if model.conversion.get("source") is None:
        raise CamvizError(
            f"{type(model).__name__} from family {model.conversion.get('family')!r} has no "
            "rebuildable source architecture (not a standard torchvision / timm / registered "
            "one), so load_converted could not rebuild it; torch.save(model.state_dict()) and "
            "rebuild it yourself"
        )
    meta = {"format": FORMAT, **model.conversion, "classes": list(classes) if classes else None,
            "transform": asdict(transform) if transform is not None else None, **extra}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)  # a killed run's leftover is found by remove_stale_temps
    try:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_converted(path: str | os.PathLike[str]) -> tuple[GapConverted, dict[str, Any]]:
    """The converted module (CPU, eval mode) and its metadata from a :func:`save_converted`
    file; the architecture is rebuilt from the metadata, the weights loaded strictly.

    Example:
        >>> read_converted("nowhere.safetensors")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        camviz.errors.WeightsUnavailable: nowhere.safetensors: not found; ...
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsUnavailable(f"{p}: not found; write one with camviz fine-tune --to-gap")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(META_KEY, "null"))
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (not a dict)
    except Exception as err:  # an untrusted file: safetensors' own errors are not OSErrors
        raise WeightsUnavailable(f"{p} is not a safetensors file ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise WeightsUnavailable(f"{p} has no camviz conversion metadata (format {FORMAT}); "
                                 "it was not written by camviz.convert.save_converted")
    model = _rebuild(meta)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise WeightsUnavailable(
            f"{p}: the weights do not fit the architecture in its metadata "
            f"({str(err).splitlines()[0]})") from err
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise WeightsUnavailable(f"{p}: tensors missing from the file: {left[:5]}")
    return model.eval(), meta


def meta_transform(meta: dict[str, Any]) -> Preprocess | None:
    """The preprocessing stored in a converted file's metadata (None when it has none).

    Example:
        >>> meta_transform({"transform": {"resize": 8, "crop": [8, 8]}}).crop
        (8, 8)
    """
    d = meta.get("transform")
    if not isinstance(d, dict):
        return None
    seq = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return Preprocess(**{k: v for k, v in seq.items() if k in Preprocess.__dataclass_fields__})


def load_converted(path: str | os.PathLike[str], device: str | torch.device = "auto") -> GapNet:
    """A converted (and fine-tuned) model saved by :func:`save_converted` or ``camviz
    fine-tune``, as a :class:`GapNet` with its class names and preprocessing.

    Example:
        >>> net = load_converted("model.safetensors")  # doctest: +SKIP
        >>> net.run(["cat.jpg"]).cams().shape  # doctest: +SKIP
    """
    model, meta = read_converted(path)
    tf = meta_transform(meta)
    size = tf.output_size if tf is not None else None
    return GapNet.from_model(model, classes=meta.get("classes"), transform=tf, device=device,
                             probe_size=size)


register_adapter(GapConverted, lambda m: Adapter(site="extra", head="fc"))
