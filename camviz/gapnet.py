"""GapNet: a classifier seen as conv features -> global pooling -> one linear head.

Everything camviz shows follows from three things of one forward pass: the last conv features
F (B, K, h, w), the head weights W (C, K) and the bias b (C). A GapNet finds them in a model
(through the family's :class:`~camviz.registry.Adapter`), proves at wrap time that
``head(pool(F))`` is the model's output, and re-checks it on every pass, so a map it returns is
exact or an error is raised.

Example:
    >>> import torch, torchvision
    >>> net = GapNet.from_model(torchvision.models.resnet18(num_classes=10), device="cpu")
    >>> res = net.run(torch.rand(2, 3, 64, 64))
    >>> cam = res.cams(classes=3)                      # (2, 1, 2, 2)
    >>> torch.allclose(cam.mean((2, 3))[:, 0] + net.head_bias[3], res.logits[:, 3], atol=1e-4)
    True
"""

from __future__ import annotations

import copy
import os
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from camviz.adapters import (
    HEAD_ADVICE,
    Adapter,
    check_head_call,
    fold_norm,
    grid_features,
    linear_at,
)
from camviz.errors import CamvizError, ImageError, NotAGapNetwork, NotExact
from camviz.exactness import check_exact, folded_head, rel_tolerance
from camviz.fingerprints import module_fingerprint, state_version
from camviz.headfile import write_head
from camviz.hooks import capture, eval_mode
from camviz.images import Preprocess, to_batch, to_batch_placed
from camviz.maps import POOLS, global_pool
from camviz.registry import adapter_for
from camviz.result import CamResult

__all__ = ["GapNet", "resolve_device", "replace_submodule", "trunk_fingerprint"]

Tensor = torch.Tensor

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; anything else is checked: an unknown device,
    or one this machine lacks, raises :class:`CamvizError` saying what to use.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("tpu")
        Traceback (most recent call last):
        ...
        camviz.errors.CamvizError: unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps
    """
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError):
        raise CamvizError(
            f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CamvizError(f"CUDA is not available on this machine (device {device!r}); use "
                          "cpu, or auto to take the best device there is")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise CamvizError(f"there is no {dev}: this machine has {torch.cuda.device_count()} "
                          "CUDA device(s)")
    if dev.type == "mps" and not has_mps:
        raise CamvizError("MPS is not available on this machine; use cpu or auto")
    return dev


class _Composed(nn.Module):
    """features -> global pooling -> head, for ``GapNet(features, head, pool)``."""

    def __init__(self, features: nn.Module, head: nn.Module, pool: str) -> None:
        super().__init__()
        self.features, self.head, self.pool = features, head, pool

    def forward(self, x: Tensor) -> Tensor:
        f = self.features(x)
        if not isinstance(f, Tensor) or f.ndim != 4:
            shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise NotAGapNetwork(
                f"`features` gave {shape}, not a (B, K, h, w) conv feature map; give GapNet "
                "the module whose output is the last conv map (before any pooling)"
            )
        return self.head(global_pool(f, self.pool))


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

    Two ways to build one, through this one constructor:

    * ``GapNet(features, head, pool="avg")``: a model given as parts (any module giving
      (B, K, h, w) features, and an ``nn.Linear``).
    * ``GapNet(model, adapter=Adapter(...))``: a whole model, with the adapter naming where
      its features and head are. :meth:`from_model` finds the adapter of a known family.

    The model goes to ``device``; each pass runs it in eval mode (and puts the caller's mode
    back), so its parameters, buffers and mode are never changed by camviz.

    Example:
        >>> feats = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        >>> net = GapNet(feats, nn.Linear(8, 4), pool="avg", device="cpu")
        >>> net.run(torch.rand(1, 3, 16, 16)).features.shape
        torch.Size([1, 8, 16, 16])
    """

    def __init__(
        self, features: nn.Module, head: nn.Module | None = None, pool: str = "avg",
        classes: Sequence[str] | None = None, transform: Preprocess | None = None,
        device: str | torch.device = "auto", check: bool = True,
        probe_size: int | tuple[int, int] | None = None, *, adapter: Adapter | None = None,
    ) -> None:
        if adapter is None:
            model, adapter = _from_parts(features, head, pool)
        elif head is not None:
            raise CamvizError("with adapter=, give the whole model and no head: "
                              "GapNet(model, adapter=adapter)")
        else:
            model = features
        if adapter.pool not in POOLS:
            raise CamvizError(f"pool must be one of {POOLS}, got {adapter.pool!r}")
        self.device = resolve_device(device)
        _check_float32(model)
        self.model = model.to(self.device)
        self.adapter = adapter
        self.transform = transform
        self._site = None if adapter.head_call else model.get_submodule(adapter.site)
        self._head = linear_at(model, adapter.head, type(model).__name__)
        self._norm = model.get_submodule(adapter.norm) if adapter.norm else None
        self.classes: list[str] = _class_names(classes, self._head.out_features)
        self.stride: int | None = None
        if check:
            self._probe(probe_size)

    @classmethod
    def from_model(
        cls, model: nn.Module, classes: Sequence[str] | None = None,
        transform: Preprocess | None = None, device: str | torch.device = "auto",
        check: bool = True, probe_size: int | tuple[int, int] | None = None,
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
        return cls(model, classes=classes, transform=transform, device=device, check=check,
                   probe_size=probe_size, adapter=adapter_for(model))

    @property
    def pool(self) -> str:
        """The global pooling: "avg" (GAP) or "max" (GMP)."""
        return self.adapter.pool

    @property
    def _probe_size(self) -> tuple[int, int]:
        out = self.transform.output_size if self.transform else None
        return out or (224, 224)

    def _probe(self, probe_size: int | tuple[int, int] | None) -> None:
        if probe_size is None:
            probe_size = self._probe_size
        if isinstance(probe_size, int):
            probe_size = (probe_size, probe_size)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, *probe_size, generator=gen).to(self.device)
        if self.adapter.head_call:
            check_head_call(self.model, self.adapter, x)
        try:
            with torch.inference_mode():
                feats, *_ = self._forward(x, check=True)
        except NotExact as err:
            raise NotAGapNetwork(
                f"{type(self.model).__name__}: head(pool(features(x))) differs from model(x) "
                f"on a probe batch ({err}). Something between `{self.adapter.site}` and "
                f"`{self.adapter.head}` is not global pooling followed by the linear head (was "
                "the model's forward changed?). Wrap the right parts with GapNet(features, head)."
            ) from None
        # the network's stride: an input smaller than one cell has no spatial map
        self.stride = max(
            1, min(probe_size[0] // feats.shape[-2], probe_size[1] // feats.shape[-1])
        )

    # -- the effective head ----------------------------------------------------------------------

    @property
    def head_weight(self) -> Tensor:
        """Effective head weights W (C, K), float32, after folding any post-pooling LayerNorm."""
        return folded_head(self._head, self._norm)[0]

    @property
    def head_bias(self) -> Tensor:
        """Effective head bias b (C,), float32 (zeros when the Linear has none)."""
        return folded_head(self._head, self._norm)[1]

    @property
    def num_classes(self) -> int:
        """C, the number of classes of the head."""
        return self._head.out_features

    @property
    def num_units(self) -> int:
        """K, the number of units (channels of F) the head reads."""
        return self._head.in_features

    # -- the pass ----------------------------------------------------------------------------------

    def _forward(
        self, x: Tensor, check: bool = True, autocast: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Features, logits and the effective head (W, b) the pass was checked against."""
        raw, out = _raw_pass(self.model, self.adapter, self._site, x, autocast)
        feats = fold_norm(grid_features(raw, self.adapter, x.shape[-2:], self.num_units),
                           self._norm, self.pool)
        if isinstance(out, tuple):  # GoogLeNet/Inception in training mode; eval gives a tensor
            out = out[0]
        out = out.float()
        w, b = self.head_weight, self.head_bias
        pooled = global_pool(feats, self.pool)
        recon = pooled @ w.T + b
        if check:
            check_exact(recon, out, pooled, w, b, rel_tolerance(self.device, autocast))
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
        return to_batch(images, self.transform).to(self.device)

    def run(self, images: Any, autocast: str | torch.dtype | None = None,
            view: str = "crop") -> CamResult:
        """One forward pass under inference mode; returns a :class:`camviz.result.CamResult`.

        ``images`` is a normalised tensor (B, 3, H, W), or a list of file paths, PIL images or
        arrays (preprocessed with the network's transform). ``view``: "crop" (the transform as
        it is, e.g. a centre crop) or "whole" (the whole photo, the shorter side resized as the
        transform does, no crop; photos of different shapes then need one run each). The
        result's ``placements`` say where each input lies in its photo. ``autocast`` ("bf16",
        "fp16") runs the network in reduced precision; maps and logits are then computed in
        float32 from the features, and checked against the network's own output at that
        precision.

        Example:
            >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 5), device="cpu")
            >>> net.run(torch.rand(2, 3, 8, 8)).logits.shape
            torch.Size([2, 5])
        """
        prep = (self.transform or Preprocess()).view(view)
        x, places = to_batch_placed(images, prep)
        x = x.to(self.device)
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
        return CamResult(logits=logits, features=feats, weight=weight, bias=bias, pool=self.pool,
                         classes=self.classes, inputs=x, transform=prep, placements=places,
                         trunk=trunk_fingerprint(self))

    def with_head(self, head: nn.Linear, classes: Sequence[str] | None = None) -> GapNet:
        """A GapNet with ``head`` in place of this one's final Linear, sharing every other module
        (the trunk is not copied; its parameters are the same tensors). The transform, device
        and pooling are kept; the new net passes the same exactness check.

        Example:
            >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
            >>> new = net.with_head(nn.Linear(4, 3), classes=["a", "b", "c"])
            >>> new.classes, new.model.features is net.model.features
            (['a', 'b', 'c'], True)
        """
        _check_new_head(head, self.num_units)
        model = replace_submodule(self.model, self.adapter.head, head.to(self.device))
        return GapNet(model, classes=classes, transform=self.transform, device=self.device,
                      probe_size=self._probe_size, adapter=self.adapter)

    def save_head(self, path: str | os.PathLike[str]) -> None:
        """Write the head (weights, bias, class names), the trunk's fingerprint and the pooling
        to a safetensors file, for :func:`camviz.load_head` (see :mod:`camviz.headfile`).

        Example:
            >>> import tempfile, pathlib
            >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
            >>> net.save_head(pathlib.Path(tempfile.mkdtemp()) / "head.safetensors")
        """
        write_head(path, self._head, self.classes, trunk_fingerprint(self), self.pool)

    def __repr__(self) -> str:
        return (
            f"GapNet({type(self.model).__name__}, features=`{self.adapter.site}`, "
            f"head=`{self.adapter.head}` {self.num_units}->{self.num_classes}, pool={self.pool}, "
            f"device={self.device})"
        )


_TRUNKS: weakref.WeakKeyDictionary[GapNet, tuple[Any, str]] = weakref.WeakKeyDictionary()


def trunk_fingerprint(net: GapNet) -> str:
    """Fingerprint of what a GapNet's unit statistics depend on: the model without its head
    (tree and tensors), the feature site, the pooling and the preprocessing. A new head on the
    same trunk (:meth:`GapNet.with_head`) has the same one. Cached per GapNet until one of its
    tensors is replaced or changed in place, so asking costs microseconds.

    Example:
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")
        >>> trunk_fingerprint(net) == trunk_fingerprint(net.with_head(nn.Linear(4, 3)))
        True
    """
    # the preprocessing and pooling are attributes a user may set: part of the cache's key
    version = (state_version(net.model), net.pool, repr(net.transform))
    cached = _TRUNKS.get(net)
    if cached is None or version[0] is None or cached[0] != version:
        extra = (net.adapter.site, net.adapter.post, net.pool, net.transform)
        cached = (version, module_fingerprint(net.model, skip=net.adapter.head, extra=extra))
        _TRUNKS[net] = cached
    return cached[1]


def _raw_pass(model: nn.Module, adapter: Adapter, site: nn.Module | None, x: Tensor,
              autocast: torch.dtype | None) -> tuple[Any, Any]:
    """The raw features and the output of one pass: ``model(x)`` with ``site`` hooked, or
    the adapter's two calls (timm's forward_features, then forward_head)."""
    with eval_mode(model):
        if adapter.head_call:
            raw = _call(getattr(model, adapter.site), x, autocast, model)
            return raw, _call(getattr(model, adapter.head_call), raw, autocast, model)
        with capture(site) as cap:
            out = _call(model, x, autocast, model)
    if cap.calls == 0:
        raise NotAGapNetwork(f"`{adapter.site}` was not called by {type(model).__name__}.forward")
    return cap.output, out


def _check_new_head(head: nn.Module, units: int) -> None:
    if not isinstance(head, nn.Linear) or head.in_features != units:
        got = f"{head.in_features} inputs" if isinstance(head, nn.Linear) else type(head).__name__
        raise CamvizError(f"the new head must be an nn.Linear of {units} inputs "
                          f"(the network's units), got {got}")


def replace_submodule(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """A shallow copy of ``model`` with the submodule at dotted ``path`` replaced by ``new``:
    the modules on the path are copied (their own attributes kept), every other module is
    shared, and ``model`` itself is unchanged.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Sequential(nn.ReLU(), nn.Linear(2, 2)))
        >>> m2 = replace_submodule(m, "1.1", nn.Linear(2, 5))
        >>> m2[1][1].out_features, m[1][1].out_features, m2[0] is m[0]
        (5, 2, True)
    """
    first, _, rest = path.partition(".")
    root = copy.copy(model)
    # its own tables (children, parameters, buffers, hooks), sharing what they hold
    root.__dict__.update({k: copy.copy(v) for k, v in model.__dict__.items()
                          if isinstance(v, dict)})
    child = model._modules[first]
    root._modules[first] = replace_submodule(child, rest, new) if rest else new
    return root


def _call(fn: Any, x: Tensor, autocast: torch.dtype | None, model: nn.Module) -> Any:
    """``fn(x)`` (under autocast); an input too small for ``model`` is an ImageError."""
    try:
        if autocast is not None:
            with torch.autocast(device_type=x.device.type, dtype=autocast):
                return fn(x)
        return fn(x)
    except (RuntimeError, AssertionError) as err:
        if x.ndim == 4 and min(x.shape[-2:]) < 64 and any(
            s in str(err) for s in ("too small", "Output size", "non-positive", "size")
        ):
            raise ImageError(
                f"input of {x.shape[-2]}x{x.shape[-1]} pixels is too small for "
                f"{type(model).__name__}: its feature map would be empty. Resize "
                "the image (a transform with a resize does this)."
            ) from err
        raise


def _check_float32(model: nn.Module) -> None:
    odd = {p.dtype for p in model.parameters() if p.dtype != torch.float32}
    if odd:
        raise CamvizError(
            f"the model's parameters are {sorted(str(d) for d in odd)}, not float32: give the "
            "float32 model (model.float()) and run it in reduced precision with "
            "net.run(x, autocast='bf16' or 'fp16'), which keeps the maps exact"
        )


def _from_parts(
    features: nn.Module, head: nn.Module | None, pool: str
) -> tuple[nn.Module, Adapter]:
    if head is None:
        raise CamvizError("give GapNet(features, head) or GapNet(model, adapter=...)")
    if pool not in POOLS:
        raise CamvizError(f"pool must be one of {POOLS}, got {pool!r}")
    if not isinstance(head, nn.Linear):
        raise NotAGapNetwork(f"head is {type(head).__name__}, not nn.Linear: {HEAD_ADVICE}")
    return _Composed(features, head, pool), Adapter(site="features", head="head", pool=pool)


def _class_names(classes: Sequence[str] | None, n: int) -> list[str]:
    names = [f"class {i}" for i in range(n)] if classes is None else [str(c) for c in classes]
    if len(names) != n:
        raise CamvizError(f"{len(names)} class names given for a head of {n} classes")
    return names
