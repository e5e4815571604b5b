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
import torch.nn.functional as F

from camviz.errors import CamvizError

__all__ = ["POOLS", "global_pool", "min_max", "min_max_np", "resize_min_max"]

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


def _sample_rows(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The bilinear (align_corners=False) sources ``(i0, i1, lam)`` of the output rows that can
    hold an extreme: the first and last output row between each pair of input cell centres.
    Within such a stretch the upsampled value is linear in the row's position, so its extremes
    over the stretch are at its two ends; in 2-d the same holds for rows and columns at once."""
    src = ((torch.arange(n_out, device=device, dtype=torch.float32) + 0.5) * (n_in / n_out)
           - 0.5).clamp_(min=0)
    i0 = src.floor().long().clamp_(max=n_in - 1)
    first = torch.ones_like(i0, dtype=torch.bool)
    first[1:] = i0[1:] != i0[:-1]
    last = torch.ones_like(first)
    last[:-1] = first[1:]
    keep = first | last
    i0, src = i0[keep], src[keep]
    return i0, (i0 + 1).clamp(max=n_in - 1), src - i0


def _lerp(m: torch.Tensor, dim: int, i0: torch.Tensor, i1: torch.Tensor,
          lam: torch.Tensor) -> torch.Tensor:
    shape = [1] * m.ndim
    shape[dim] = -1
    lam = lam.view(shape)
    return m.index_select(dim, i0) * (1 - lam) + m.index_select(dim, i1) * lam


def resize_min_max(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``min_max`` of the bilinear upsampling (``align_corners=False``) of (B, n, h, w) maps to
    ``size``, without normalising the large maps: an affine map commutes with bilinear
    interpolation, and the extremes of the upsampled map lie on the few output rows and
    columns next to the input cell centres, so the extremes come from those rows and
    columns, the small maps are normalised, then upsampled. Equal to the slow way up to float
    rounding (clamped to [0, 1]); a constant map, or one with NaN or infinity, gives zeros.

    Example:
        >>> m = torch.rand(2, 3, 7, 7)
        >>> slow = min_max(F.interpolate(m, size=(50, 64), mode="bilinear"))
        >>> bool((resize_min_max(m, (50, 64)) - slow).abs().max() < 1e-5)
        True
    """
    h, w = maps.shape[-2:]
    size = (int(size[0]), int(size[1]))
    if (h, w) == size:
        return min_max(maps)
    m = maps.float()
    # (B, n, rows, cols): the upsampled values on the rows and columns where extremes can be
    edges = _lerp(_lerp(m, -2, *_sample_rows(h, size[0], m.device)), -1,
                  *_sample_rows(w, size[1], m.device))
    lo = edges.amin(dim=(-2, -1), keepdim=True)
    hi = edges.amax(dim=(-2, -1), keepdim=True)
    own = m.flatten(-2)
    flat_span = own.amax(-1) - own.amin(-1)
    bad = ((flat_span <= 0) | ~torch.isfinite(flat_span))[..., None, None] | (hi - lo <= 0)
    span = torch.where(bad, torch.ones_like(hi), hi - lo)
    small = torch.where(bad, torch.zeros_like(m), (m - lo) / span)
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False).clamp_(0, 1)
