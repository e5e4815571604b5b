"""GapNet: a classifier seen as conv features -> global pooling -> one linear head.

Everything camviz shows follows from three things of one forward pass: the last conv features
F (B, K, h, w), the head weights W (C, K) and the bias b (C). A GapNet finds them in a model,
proves at wrap time that ``head(pool(F))`` is the model's output, and re-checks it on every pass,
so a map it returns is exact or an error is raised.

Example:
    >>> import torch, torchvision
    >>> net = GapNet.from_model(torchvision.models.resnet18(num_classes=10), device="cpu")
    >>> res = net.run(torch.rand(2, 3, 64, 64))
    >>> cam = res.cams(classes=3)                      # (2, 1, 2, 2)
    >>> torch.allclose(cam.mean((2, 3))[:, 0] + net.head_bias[3], res.logits[:, 3], atol=1e-4)
    True
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from camviz.errors import (
    CamvizError,
    ImageError,
    NotAGapNetwork,
    NotExact,
    UnknownModel,
    WeightsUnavailable,
)
from camviz.hooks import capture
from camviz.images import Preprocess

Tensor = torch.Tensor


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; anything else is passed to ``torch.device``.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


# ----------------------------------------------------------------------------------------------
# Adapters: where F and the head live in each model family.


@dataclass(frozen=True)
class Adapter:
    """Where a model keeps its GAP structure.

    ``site`` is the dotted name of the module whose output is F (before ``post``); ``head`` the
    dotted name of the final ``nn.Linear``; ``post`` an elementwise function the model applies to
    F before pooling (DenseNet's ReLU); ``norm`` the dotted name of a LayerNorm applied to the
    pooled vector (ConvNeXt), folded per image into F and into the head.
    """

    site: str
    head: str
    post: Callable[[Tensor], Tensor] | None = None
    norm: str | None = None
    pool: str = "avg"


AdapterFn = Callable[[nn.Module], Adapter]
_ADAPTERS: dict[type, AdapterFn] = {}


def register_adapter(cls: type, fn: AdapterFn) -> None:
    """Teach :meth:`GapNet.from_model` a model family: ``fn(model) -> Adapter``.

    Example:
        >>> class Tiny(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)
        ...     def forward(self, x):
        ...         return self.fc(self.body(x).mean((2, 3)))
        >>> register_adapter(Tiny, lambda m: Adapter(site="body", head="fc"))
        >>> GapNet.from_model(Tiny(), device="cpu").head_weight.shape
        torch.Size([2, 4])
    """
    _ADAPTERS[cls] = fn


def _linear_at(model: nn.Module, name: str, family: str, advice: str) -> nn.Linear:
    mod = model.get_submodule(name)
    if not isinstance(mod, nn.Linear):
        raise NotAGapNetwork(
            f"{family}: `{name}` is {type(mod).__name__}, not a single nn.Linear, so the class "
            f"score is not a linear function of the pooled features and no map is exact. {advice}"
        )
    return mod


_HEAD_ADVICE = (
    "Replace it by one nn.Linear (and retrain it on frozen features), or wrap the network "
    "yourself with GapNet(features, head)."
)


def _install_torchvision_adapters() -> None:
    from torchvision import models as tvm

    def simple(site: str, head: str, **kw: Any) -> AdapterFn:
        def fn(model: nn.Module) -> Adapter:
            _linear_at(model, head, type(model).__name__, _HEAD_ADVICE)
            return Adapter(site=site, head=head, **kw)

        return fn

    register_adapter(tvm.ResNet, simple("layer4", "fc"))
    register_adapter(tvm.DenseNet, simple("features", "classifier", post=F.relu))
    register_adapter(tvm.GoogLeNet, simple("inception5b", "fc"))
    register_adapter(tvm.Inception3, simple("Mixed_7c", "fc"))
    register_adapter(tvm.MobileNetV2, simple("features", "classifier.1"))
    register_adapter(tvm.EfficientNet, simple("features", "classifier.1"))
    register_adapter(tvm.RegNet, simple("trunk_output", "fc"))
    register_adapter(tvm.ShuffleNetV2, simple("conv5", "fc"))
    register_adapter(tvm.MNASNet, simple("layers", "classifier.1"))
    register_adapter(tvm.ConvNeXt, simple("features", "classifier.2", norm="classifier.0"))

    def refuse(reason: str) -> AdapterFn:
        def fn(model: nn.Module) -> Adapter:
            raise NotAGapNetwork(f"{type(model).__name__}: {reason}")

        return fn

    register_adapter(
        tvm.MobileNetV3,
        refuse(
            "`classifier` is Linear -> Hardswish -> Dropout -> Linear: the non-linearity between "
            "the two layers makes the class score non-linear in the pooled features, so no map "
            "is exact. Fit one nn.Linear on the pooled `features` output (camviz's generic "
            "localization recipe) or use MobileNetV2 / EfficientNet, which end in one Linear."
        ),
    )
    fc_stack = (
        "`classifier` is a stack of fully connected layers over the flattened {} feature map, "
        "not global pooling followed by one linear layer. Convert it to a GAP network "
        "(keep `features`, add a conv layer, global average pooling and one nn.Linear, then "
        "fine-tune), as in the CAM paper's VGGnet-GAP / AlexNet-GAP."
    )
    register_adapter(tvm.VGG, refuse(fc_stack.format("7x7")))
    register_adapter(tvm.AlexNet, refuse(fc_stack.format("6x6")))
    register_adapter(
        tvm.SqueezeNet,
        refuse(
            "`classifier.2` (ReLU) is applied to the class maps before `classifier.3` "
            "(average pooling), so pooling is not linear in the maps and the mean of a map is "
            "not the logit. Use the maps of `classifier.1` only with care, or use a network "
            "that pools before its linear classifier."
        ),
    )


def _adapter_for(model: nn.Module) -> AdapterFn:
    if not _TV_INSTALLED:
        _install_torchvision_adapters()
        _TV_INSTALLED.append(True)
    for klass in type(model).__mro__:
        if klass in _ADAPTERS:
            return _ADAPTERS[klass]
    raise NotAGapNetwork(
        f"no adapter for {type(model).__name__}: camviz knows "
        f"{sorted(k.__name__ for k in _ADAPTERS)}. Wrap it as "
        "GapNet(features, head, pool='avg') with `features` giving the last conv map and "
        "`head` the final nn.Linear, or teach camviz the family with register_adapter()."
    )


_TV_INSTALLED: list[bool] = []

# ----------------------------------------------------------------------------------------------


class _Composed(nn.Module):
    """features -> global pooling -> head, for :class:`GapNet`'s plain constructor."""

    def __init__(self, features: nn.Module, head: nn.Module, pool: str) -> None:
        super().__init__()
        self.features, self.head, self.pool = features, head, pool

    def forward(self, x: Tensor) -> Tensor:
        return self.head(global_pool(self.features(x), self.pool))


def global_pool(f: Tensor, kind: str) -> Tensor:
    """Global average ("avg") or max ("max") pooling of (B, K, h, w) features to (B, K).

    Example:
        >>> global_pool(torch.tensor([[[[1.0, 3.0]]]]), "max").tolist()
        [[3.0]]
    """
    return f.amax(dim=(2, 3)) if kind == "max" else f.mean(dim=(2, 3))


def _tolerance(pooled: Tensor, weight: Tensor, bias: Tensor, rel: float) -> Tensor:
    # Float error of a dot product scales with the sum of |terms|, not with the result.
    scale = pooled.abs() @ weight.abs().T + bias.abs()
    return rel * scale + 1e-5


def _autocast_dtype(autocast: str | torch.dtype | None) -> torch.dtype | None:
    if autocast is None or isinstance(autocast, torch.dtype):
        return autocast
    table = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "half": torch.float16,
    }
    if autocast not in table:
        raise CamvizError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}")
    return table[autocast]


class GapNet:
    """A GAP network: conv features, global pooling, one linear head.

    Use :meth:`from_model` for torchvision families (or any family taught with
    :func:`register_adapter`), or ``GapNet(features, head, pool)`` for a model given as parts.
    The model is put in eval mode and moved to ``device``.

    Example:
        >>> feats = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        >>> net = GapNet(feats, nn.Linear(8, 4), pool="avg", device="cpu")
        >>> net.run(torch.rand(1, 3, 16, 16)).features.shape
        torch.Size([1, 8, 16, 16])
    """

    def __init__(
        self,
        features: nn.Module,
        head: nn.Module,
        pool: str = "avg",
        classes: Sequence[str] | None = None,
        transform: Preprocess | None = None,
        device: str | torch.device = "auto",
        check: bool = True,
        probe_size: int | tuple[int, int] | None = None,
    ) -> None:
        if pool not in ("avg", "max"):
            raise CamvizError(f"pool must be 'avg' or 'max', got {pool!r}")
        if not isinstance(head, nn.Linear):
            raise NotAGapNetwork(f"head is {type(head).__name__}, not nn.Linear: {_HEAD_ADVICE}")
        model = _Composed(features, head, pool)
        self._setup(
            model,
            Adapter(site="features", head="head", pool=pool),
            classes,
            transform,
            device,
            check,
            probe_size,
        )

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        classes: Sequence[str] | None = None,
        transform: Preprocess | None = None,
        device: str | torch.device = "auto",
        check: bool = True,
        probe_size: int | tuple[int, int] | None = None,
    ) -> GapNet:
        """Wrap a classifier of a known family, checking on a probe batch that maps are exact.

        Raises :class:`NotAGapNetwork` naming the module that breaks the structure.

        Example:
            >>> import torchvision
            >>> GapNet.from_model(torchvision.models.vgg11())
            Traceback (most recent call last):
            ...
            camviz.errors.NotAGapNetwork: VGG: `classifier` is a stack of fully connected ...
        """
        adapter = _adapter_for(model)(model)
        self = cls.__new__(cls)
        self._setup(model, adapter, classes, transform, device, check, probe_size)
        return self

    # -- set-up ---------------------------------------------------------------------------------
    def _setup(
        self,
        model: nn.Module,
        adapter: Adapter,
        classes: Sequence[str] | None,
        transform: Preprocess | None,
        device: str | torch.device,
        check: bool,
        probe_size: int | tuple[int, int] | None,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.adapter = adapter
        self.pool = adapter.pool
        self.transform = transform
        self._site = model.get_submodule(adapter.site)
        self._head = _linear_at(model, adapter.head, type(model).__name__, _HEAD_ADVICE)
        self._norm = model.get_submodule(adapter.norm) if adapter.norm else None
        n = self._head.out_features
        if classes is None:
            classes = [f"class {i}" for i in range(n)]
        classes = [str(c) for c in classes]
        if len(classes) != n:
            raise CamvizError(f"{len(classes)} class names given for a head of {n} classes")
        self.classes: list[str] = classes
        self.stride: int | None = None
        if check:
            self._probe(probe_size)

    def _probe(self, probe_size: int | tuple[int, int] | None) -> None:
        if probe_size is None:
            out = self.transform.output_size if self.transform else None
            probe_size = out or (224, 224)
        if isinstance(probe_size, int):
            probe_size = (probe_size, probe_size)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, *probe_size, generator=gen).to(self.device)
        name = type(self.model).__name__
        try:
            with torch.inference_mode():
                feats, *_ = self._forward(x, check=True)
            # the network's stride: an input smaller than one cell has no spatial map
            self.stride = max(
                1, min(probe_size[0] // feats.shape[-2], probe_size[1] // feats.shape[-1])
            )
        except NotExact as err:
            raise NotAGapNetwork(
                f"{name}: head(pool(features(x))) differs from model(x) on a probe batch "
                f"({err}). Something between `{self.adapter.site}` and `{self.adapter.head}` "
                "is not global pooling followed by the linear head (was the model's forward "
                "changed?). Wrap the right parts with GapNet(features, head)."
            ) from None

    # -- the effective head ----------------------------------------------------------------------

    @property
    def head_weight(self) -> Tensor:
        """Effective head weights W (C, K), float32, after folding any post-pooling LayerNorm."""
        w = self._head.weight.detach().float()
        if self._norm is not None and getattr(self._norm, "weight", None) is not None:
            w = w * self._norm.weight.detach().float()[None, :]
        return w

    @property
    def head_bias(self) -> Tensor:
        """Effective head bias b (C,), float32 (zeros when the Linear has none)."""
        lin = self._head
        b = (
            lin.bias.detach().float()
            if lin.bias is not None
            else torch.zeros(lin.out_features, device=lin.weight.device)
        )
        if self._norm is not None and getattr(self._norm, "bias", None) is not None:
            b = b + lin.weight.detach().float() @ self._norm.bias.detach().float()
        return b

    @property
    def num_classes(self) -> int:
        return self._head.out_features

    @property
    def num_units(self) -> int:
        return self._head.in_features

    # -- the pass ----------------------------------------------------------------------------------

    def _features_of(self, raw: Tensor) -> Tensor:
        if not isinstance(raw, Tensor) or raw.ndim != 4:
            shape = tuple(raw.shape) if isinstance(raw, Tensor) else type(raw).__name__
            raise NotAGapNetwork(
                f"`{self.adapter.site}` gave {shape}, not a (B, K, h, w) conv feature map"
            )
        f = raw.float()
        if self.adapter.post is not None:
            f = self.adapter.post(f)
        if self._norm is not None:
            # LayerNorm over channels of the pooled vector: subtract its mean and divide by its
            # std per image, in F itself, so the mean of F is the normalised vector (exact).
            pooled = f.mean(dim=(2, 3))
            mu = pooled.mean(dim=1, keepdim=True)
            var = pooled.var(dim=1, unbiased=False, keepdim=True)
            eps = float(getattr(self._norm, "eps", 1e-6))
            f = (f - mu[..., None, None]) / torch.sqrt(var + eps)[..., None, None]
        return f

    def _forward(
        self, x: Tensor, check: bool = True, autocast: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Features, logits and the effective head (W, b) the pass was checked against."""
        with capture(self._site) as cap:
            try:
                if autocast is not None:
                    with torch.autocast(device_type=self.device.type, dtype=autocast):
                        out = self.model(x)
                else:
                    out = self.model(x)
            except RuntimeError as err:
                if min(x.shape[-2:]) < 64 and any(
                    s in str(err) for s in ("too small", "Output size", "non-positive", "size")
                ):
                    raise ImageError(
                        f"input of {x.shape[-2]}x{x.shape[-1]} pixels is too small for "
                        f"{type(self.model).__name__}: its feature map would be empty. Resize "
                        "the image (a transform with a resize does this)."
                    ) from err
                raise
        if cap.calls == 0:
            raise NotAGapNetwork(
                f"`{self.adapter.site}` was not called by {type(self.model).__name__}.forward"
            )
        feats = self._features_of(cap.output)
        if isinstance(out, tuple):  # GoogLeNet/Inception in training mode; eval gives a tensor
            out = out[0]
        out = out.float()
        w, b = self.head_weight, self.head_bias
        pooled = global_pool(feats, self.pool)
        recon = pooled @ w.T + b
        if check:
            rel = 1e-4
            if autocast is not None:
                rel = 3e-2
            elif self.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
                rel = 5e-3
            err = (recon - out).abs()
            tol = _tolerance(pooled, w, b, rel)
            if not bool((err <= tol).all()):
                worst = float((err - tol).amax())
                raise NotExact(
                    f"pooled features through the head miss the logits by up to "
                    f"{float(err.amax()):.3g} (over tolerance by {worst:.3g})"
                )
        logits = recon if autocast is not None else out
        return feats, logits, w, b

    def prepare(self, images: Any) -> Tensor:
        """Turn a batch given as a tensor, or a list of paths / PIL images / arrays, into a
        normalised tensor (B, 3, H, W) on the device.

        Example:
            >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 2), device="cpu")
            >>> net.prepare(torch.zeros(3, 8, 8)).shape
            torch.Size([1, 3, 8, 8])
        """
        if isinstance(images, Tensor):
            x = images[None] if images.ndim == 3 else images
            if x.ndim != 4 or x.shape[1] != 3:
                raise ImageError(
                    f"expected a (B, 3, H, W) or (3, H, W) tensor, got {tuple(x.shape)}"
                )
            return x.to(self.device, torch.float32)
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise ImageError("no images given")
        prep = self.transform or Preprocess()
        tensors = [prep(img) for img in images]
        sizes = {tuple(t.shape[-2:]) for t in tensors}
        if len(sizes) > 1:
            raise ImageError(
                f"images of different sizes {sorted(sizes)} cannot form one batch: give the "
                "network a transform with a crop or exact resize, or run them one by one"
            )
        return torch.stack(tensors).to(self.device)

    def run(self, images: Any, autocast: str | torch.dtype | None = None) -> Any:
        """One forward pass under inference mode; returns a :class:`camviz.result.CamResult`.

        ``images`` is a normalised tensor (B, 3, H, W), or a list of file paths, PIL images or
        arrays (preprocessed with the network's transform). ``autocast`` ("bf16", "fp16") runs
        the network in reduced precision; maps and logits are then computed in float32 from the
        features, and checked against the network's own output at that precision.

        Example:
            >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 5), device="cpu")
            >>> net.run(torch.rand(2, 3, 8, 8)).logits.shape
            torch.Size([2, 5])
        """
        from camviz.result import CamResult  # result sits below gapnet in the data flow

        x = self.prepare(images)
        if self.stride is not None and min(x.shape[-2:]) < self.stride:
            raise ImageError(
                f"input of {x.shape[-2]}x{x.shape[-1]} pixels is smaller than the network's "
                f"stride ({self.stride} pixels), so its map would have no spatial detail. "
                "Resize the image first (a transform with a resize does this)."
            )
        with torch.inference_mode():
            feats, logits, weight, bias = self._forward(
                x, check=True, autocast=_autocast_dtype(autocast)
            )
        return CamResult(
            logits=logits,
            features=feats,
            weight=weight,
            bias=bias,
            pool=self.pool,
            classes=self.classes,
            inputs=x,
            transform=self.transform,
        )

    def __repr__(self) -> str:
        return (
            f"GapNet({type(self.model).__name__}, features=`{self.adapter.site}`, "
            f"head=`{self.adapter.head}` {self.num_units}->{self.num_classes}, pool={self.pool}, "
            f"device={self.device})"
        )


# ----------------------------------------------------------------------------------------------
# Models by name.

ModelLoader = Callable[..., GapNet]
_MODELS: dict[str, ModelLoader] = {}


def register_model(name: str, loader: ModelLoader) -> None:
    """Make ``load_model(name, weights=..., device=...)`` call ``loader(weights, device)``.

    Example:
        >>> register_model("tiny", lambda weights, device: GapNet(
        ...     nn.Conv2d(3, 2, 1), nn.Linear(2, 2), device=device))
        >>> load_model("tiny", device="cpu").num_classes
        2
    """
    _MODELS[name] = loader


def _checkpoint_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _fetch_verified(weights: Any) -> None:
    """Make sure the weights file is in torch's cache and holds only tensors (weights_only)."""
    path = _checkpoint_path(weights.url)
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

    ``name`` is a registered camviz model ("demo", "demo-gmp") or a torchvision classification
    model ("resnet50", ...). ``weights`` is "DEFAULT", a weights name ("IMAGENET1K_V2"), a
    torchvision weights enum member, or None for random weights (transform and names still come
    from the default weights' metadata). Offline with no cached weights raises
    :class:`WeightsUnavailable`.

    Example:
        >>> net = load_model("resnet18", weights=None, device="cpu")
        >>> net.classes[:2], net.transform.crop
        (['tench', 'goldfish'], (224, 224))
    """
    if name in _MODELS:
        return _MODELS[name](weights=weights, device=device, **kwargs)
    import torchvision.models as tvm

    known = set(tvm.list_models(module=tvm))
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known | set(_MODELS)), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModel(
            f"unknown model {name!r}.{hint} Use a torchvision classification model name "
            f"(torchvision.models.list_models()) or one of {sorted(_MODELS)}."
        )
    enum = tvm.get_model_weights(name)
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
    n_out = model.get_submodule(_head_name(model)).out_features
    classes = categories if categories and len(categories) == n_out else None
    transform = Preprocess.from_torchvision(meta_w.transforms())
    return GapNet.from_model(model, classes=classes, transform=transform, device=device)


def _head_name(model: nn.Module) -> str:
    return _adapter_for(model)(model).head
