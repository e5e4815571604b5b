"""The pure map math every layer above shares: global pooling and min-max normalisation.

Both come in torch (on the tensor's device) and :func:`min_max_np` in numpy for the
localization helpers that work on arrays. The rules are the WSOL reference's: a constant map,
or one with NaN or infinity, normalises to all zeros.

Example:
    >>> import torch
    >>> f = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])
    >>> global_pool(f, "avg").tolist(), global_pool(f, "max").tolist()
    ([[4.0]], [[7.0]])
    >>> min_max(f).flatten().tolist()
    [0.0, 0.3333333432674408, 0.6666666865348816, 1.0]
"""

from __future__ import annotations

import numpy as np
import torch

from camviz.errors import CamvizError

__all__ = ["POOLS", "global_pool", "min_max", "min_max_np"]

#: The global poolings a GAP network may use: average (the CAM paper's) or max (its GMP twin).
POOLS = ("avg", "max")


def global_pool(f: torch.Tensor, kind: str) -> torch.Tensor:
    """Global average ("avg") or max ("max") pooling of (B, K, h, w) features to (B, K).

    Example:
        >>> global_pool(torch.tensor([[[[1.0, 3.0]]]]), "max").tolist()
        [[3.0]]
    """
    if kind == "avg":
        return f.mean(dim=(2, 3))
    if kind == "max":
        return f.amax(dim=(2, 3))
    raise CamvizError(f"pool must be one of {POOLS}, got {kind!r}")


def min_max(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (h, w) map of a (..., h, w) tensor to [0, 1].

    A constant map, or one containing NaN or infinity, becomes all zeros (the WSOL
    reference's rule).

    Example:
        >>> min_max(torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]])).tolist()
        [[[0.0, 1.0]], [[0.0, 0.0]]]
    """
    flat = maps.flatten(-2)
    lo = flat.amin(-1, keepdim=True)
    hi = flat.amax(-1, keepdim=True)
    span = hi - lo
    bad = (span <= 0) | torch.isnan(flat).any(-1, keepdim=True) | ~torch.isfinite(span)
    out = (flat - lo) / torch.where(bad, torch.ones_like(span), span)
    out = torch.where(bad, torch.zeros_like(out), out)
    return out.view_as(maps)


def min_max_np(maps: np.ndarray) -> np.ndarray:
    """:func:`min_max` for numpy arrays (..., h, w), in float64.

    Example:
        >>> min_max_np(np.array([[1.0, 3.0], [2.0, 5.0]])).tolist()
        [[0.0, 0.5], [0.25, 1.0]]
    """
    a = np.asarray(maps, dtype=np.float64)
    lo = a.min(axis=(-2, -1), keepdims=True)
    hi = a.max(axis=(-2, -1), keepdims=True)
    bad = ~np.isfinite(lo) | ~np.isfinite(hi) | (hi == lo)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (a - lo) / np.where(bad, 1.0, hi - lo)
    return np.where(bad, 0.0, out)
