"""Exactness, checked rather than assumed: the head a pass is checked against, how far
``head(pool(F))`` may lie from the network's own logits, and the check itself.

Example:
    >>> p, w, b = torch.ones(1, 2), torch.ones(3, 2), torch.zeros(3)
    >>> check_exact(p @ w.T + b, torch.full((1, 3), 2.0), p, w, b)
"""

from __future__ import annotations

import torch
from torch import nn

from camviz.errors import NotExact

__all__ = ["REL_TOL", "REL_TOL_TF32", "REL_TOL_AUTOCAST", "ABS_TOL", "tolerance",
           "rel_tolerance", "check_exact", "folded_head"]

Tensor = torch.Tensor

#: Relative tolerance of the exactness check in float32: the logit and ``head(pool(F))`` are
#: the same dot products summed in another order, whose error is a few ulps (1.2e-7 each) of
#: the sum of |terms|; 1e-4 of that sum leaves room for K up to ~10^4 terms.
REL_TOL = 1e-4
#: On CUDA with TF32 matmuls allowed, products keep 10 mantissa bits (2^-11 = 4.9e-4 each).
REL_TOL_TF32 = 5e-3
#: Under bf16/fp16 autocast the network's own logits carry 8-bit (bf16) mantissas: 2^-8 = 3.9e-3
#: per product, accumulated; 3e-2 of the sum of |terms| is what such a pass may miss by.
REL_TOL_AUTOCAST = 3e-2
#: Absolute floor, for logits whose terms nearly all vanish (a dead feature map).
ABS_TOL = 1e-5


def tolerance(pooled: Tensor, weight: Tensor, bias: Tensor, rel: float) -> Tensor:
    """How far ``pooled @ weight.T + bias`` may lie from the logits: ``rel`` times the sum of
    |terms| (a dot product's float error scales with it, not with the result) plus ABS_TOL.

    Example:
        >>> round(float(tolerance(torch.ones(1, 2), torch.ones(1, 2), torch.zeros(1), 0.5)), 5)
        1.00001
    """
    scale = pooled.abs() @ weight.abs().T + bias.abs()
    return rel * scale + ABS_TOL


def rel_tolerance(device: torch.device, autocast: torch.dtype | None) -> float:
    """The relative tolerance of a pass on ``device`` (under ``autocast``, or float32).

    Example:
        >>> rel_tolerance(torch.device("cpu"), None) == REL_TOL
        True
    """
    if autocast is not None:
        return REL_TOL_AUTOCAST
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return REL_TOL_TF32
    return REL_TOL


def check_exact(recon: Tensor, out: Tensor, pooled: Tensor, w: Tensor, b: Tensor,
                rel: float = REL_TOL) -> None:
    """Raise :class:`NotExact` unless ``recon = pooled @ w.T + b`` equals the network's logits
    ``out`` within :func:`tolerance` (or the logits are not finite).

    Example:
        >>> p, w, b = torch.ones(1, 2), torch.ones(3, 2), torch.zeros(3)
        >>> check_exact(p @ w.T + b, torch.full((1, 3), 2.0), p, w, b)
        >>> check_exact(p @ w.T + b, torch.full((1, 3), 2.5), p, w, b)
        Traceback (most recent call last):
        ...
        camviz.errors.NotExact: pooled features through the head miss the logits by up to 0.5 ...
    """
    if not bool(torch.isfinite(out).all()):
        raise NotExact(
            "the network's logits are not finite (NaN or infinity): check the input for NaN "
            "or infinite values and the weights for overflow"
        )
    err = (recon - out).abs()
    # |recon| <= sum of |terms|, so within rel * |recon| is within the tolerance: only a pass
    # that misses by more needs the sum of |terms| (a (B, K) x (K, C) product of |W|)
    if bool((err <= rel * recon.abs() + ABS_TOL).all()):
        return
    tol = tolerance(pooled, w, b, rel)
    if not bool((err <= tol).all()):
        worst = float((err - tol).amax())
        raise NotExact(
            f"pooled features through the head miss the logits by up to "
            f"{float(err.amax()):.3g} (over tolerance by {worst:.3g})"
        )


def folded_head(lin: nn.Linear, norm: nn.Module | None) -> tuple[Tensor, Tensor]:
    """The head (W, b) in float32, with a LayerNorm ``norm`` applied to the pooled vector
    before ``lin`` folded in: ``W * gamma`` and ``b + W beta`` (the per-image centring and
    scaling are folded into F by the pass).

    Example:
        >>> lin, ln = nn.Linear(2, 1), nn.LayerNorm(2)
        >>> w, b = folded_head(lin, ln)
        >>> torch.equal(w, lin.weight.detach() * ln.weight.detach())
        True
    """
    w = lin.weight.detach().float()
    b = (lin.bias.detach().float() if lin.bias is not None
         else torch.zeros(lin.out_features, device=lin.weight.device))
    if norm is not None and getattr(norm, "bias", None) is not None:
        b = b + w @ norm.bias.detach().float()
    if norm is not None and getattr(norm, "weight", None) is not None:
        w = w * norm.weight.detach().float()[None, :]
    return w, b
