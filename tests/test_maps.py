"""camviz.maps.resize_min_max: min-max of the bilinear upsampling, computed on the small maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from camviz.maps import min_max, resize_min_max


def slow(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return min_max(F.interpolate(maps, size=size, mode="bilinear", align_corners=False))


@settings(max_examples=80, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), out_h=st.integers(1, 80),
       out_w=st.integers(1, 80), seed=st.integers(0, 2**31 - 1))
def test_fast_path_equals_normalising_the_upsampled_map(h, w, out_h, out_w, seed):
    gen = torch.Generator().manual_seed(seed)
    maps = torch.randn(2, 3, h, w, generator=gen) * 5
    fast, ref = resize_min_max(maps, (out_h, out_w)), slow(maps, (out_h, out_w))
    assert fast.min() >= 0 and fast.max() <= 1
    # Where the upsampled map is constant in exact arithmetic (one output pixel, or one input
    # row/column stretched), the slow way normalises float rounding noise into [0, 1]; the fast
    # way gives the zeros of a constant map. Compare the maps with a real spread only.
    up = F.interpolate(maps, size=(out_h, out_w), mode="bilinear", align_corners=False)
    span = up.amax((2, 3)) - up.amin((2, 3))
    spread = span > 1e-3
    # float32 rounding: a few ulps (1.2e-7) of the values, relative to the map's span
    tol = 8 * 1.2e-7 * up.abs().amax((2, 3)) / span.clamp(min=1e-3) + 1e-6
    diff = (fast - ref).abs().amax((2, 3))
    assert bool((diff <= tol)[spread].all())


def test_extremes_reach_zero_and_one_on_upsampling():
    maps = torch.randn(4, 5, 7, 7, generator=torch.Generator().manual_seed(0))
    out = resize_min_max(maps, (224, 224))
    assert torch.allclose(out.amin((2, 3)), torch.zeros(4, 5), atol=1e-6)
    assert torch.allclose(out.amax((2, 3)), torch.ones(4, 5), atol=1e-6)


def test_constant_nan_and_infinite_maps_give_zeros():
    maps = torch.stack([torch.full((3, 3), 2.5), torch.rand(3, 3)])[None]
    bad = maps.clone()
    bad[0, 1, 0, 0] = float("nan")
    inf = maps.clone()
    inf[0, 1, 1, 1] = float("inf")
    assert resize_min_max(maps, (10, 10))[0, 0].eq(0).all()
    assert resize_min_max(bad, (10, 10))[0, 1].eq(0).all()
    assert resize_min_max(inf, (10, 10))[0, 1].eq(0).all()


def test_same_size_is_plain_min_max():
    maps = torch.rand(1, 2, 4, 4)
    assert torch.equal(resize_min_max(maps, (4, 4)), min_max(maps))
