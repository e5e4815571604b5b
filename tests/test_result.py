"""CamResult: class specs, upsampling, normalisation, units and their contributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import camviz
from camviz.maps import min_max


def test_class_specs_per_image_and_shared(tiny_net: camviz.GapNet) -> None:
    res = tiny_net.run(torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    full = res.cams(list(range(5)))  # (3, 5, h, w)
    per_image = torch.tensor([[4, 0], [1, 1], [2, 3]])
    got = res.cams(per_image)
    for b in range(3):
        for j in range(2):
            torch.testing.assert_close(got[b, j], full[b, per_image[b, j]])
    torch.testing.assert_close(res.cams(2), full[:, 2:3])
    torch.testing.assert_close(
        res.cams(torch.tensor([0, 1, 2])), torch.stack([full[i, i] for i in range(3)])[:, None]
    )
    top1 = res.logits.argmax(1)
    torch.testing.assert_close(
        res.cams(), torch.stack([full[i, c] for i, c in enumerate(top1)])[:, None]
    )


def test_class_spec_errors(tiny_net: camviz.GapNet) -> None:
    res = tiny_net.run(torch.rand(2, 3, 32, 32))
    with pytest.raises(camviz.CamvizError, match="out of range 0..4"):
        res.cams(5)
    with pytest.raises(camviz.CamvizError, match="one class per image: expected 2, got 3"):
        res.cams(torch.tensor([0, 1, 2]))
    with pytest.raises(camviz.CamvizError, match="empty class list"):
        res.cams([])
    with pytest.raises(camviz.CamvizError, match="size must be"):
        res.cams(size="big")


def test_upsampled_maps_are_bilinear_and_input_sized(tiny_net: camviz.GapNet) -> None:
    res = tiny_net.run(torch.rand(2, 3, 32, 32))
    raw = res.cams([1, 3])
    up = res.cams([1, 3], size="input")
    assert up.shape == (2, 2, 32, 32) and res.input_size == (32, 32)
    ref = torch.nn.functional.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, ref)
    assert res.cams(size=(20, 10)).shape[-2:] == (20, 10)


def test_normalize_is_per_map_min_max(tiny_net: camviz.GapNet) -> None:
    res = tiny_net.run(torch.rand(2, 3, 32, 32))
    maps = res.cams([0, 1, 2], size=32, normalize=True)
    flat = maps.flatten(2)
    torch.testing.assert_close(flat.amin(-1), torch.zeros(2, 3))
    torch.testing.assert_close(flat.amax(-1), torch.ones(2, 3))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=4, max_size=4))
def test_min_max_property(values: list[float]) -> None:
    m = torch.tensor(values, dtype=torch.float32).view(1, 2, 2)
    out = min_max(m)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6
    if max(values) - min(values) > 1e-3:
        assert float(out.max()) == pytest.approx(1.0) and float(out.min()) == 0.0
        # order is kept, up to ties: float32 rounding may merge values closer than its epsilon
        # (-5e-25 and 0 both map to 1 when the minimum is -1)
        by_input = out.flatten()[m.flatten().argsort(stable=True)]
        assert bool((by_input.diff() >= 0).all())


def test_constant_and_nan_maps_normalise_to_zero() -> None:
    m = torch.tensor([[[2.0, 2.0], [2.0, 2.0]], [[float("nan"), 1.0], [0.0, 3.0]]])
    assert torch.equal(min_max(m), torch.zeros_like(m))


def test_units_contributions_sum_to_logit_minus_bias(tiny_net: camviz.GapNet) -> None:
    res = tiny_net.run(torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5)))
    k_all = tiny_net.num_units
    for c in range(5):
        u = res.units(c, k=k_all, order="contribution")
        torch.testing.assert_close(u.contributions.sum(1), res.logits[:, c] - tiny_net.head_bias[c])
        torch.testing.assert_close(u.logit, res.logits[:, c])
        torch.testing.assert_close(u.maps.sum(1), res.cams(c)[:, 0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(u.share.sum(1), torch.ones(3))


def test_units_ranking_orders(tiny_net: camviz.GapNet) -> None:
    res = tiny_net.run(torch.rand(2, 3, 32, 32))
    w = tiny_net.head_weight[3]
    by_w = res.units(3, k=4)
    assert by_w.ids[0].tolist() == w.topk(4).indices.tolist() == by_w.ids[1].tolist()
    assert torch.all(by_w.weights[:, :-1] >= by_w.weights[:, 1:])
    by_c = res.units(torch.tensor([3, 0]), k=4, order="contribution")
    assert torch.all(by_c.contributions[:, :-1] >= by_c.contributions[:, 1:])
    assert by_c.cls.tolist() == [3, 0]
    # each unit map is w_ck f_k
    b, j = 1, 2
    k = int(by_c.ids[b, j])
    torch.testing.assert_close(by_c.maps[b, j], tiny_net.head_weight[0, k] * res.features[b, k])
    with pytest.raises(camviz.CamvizError, match="order must be"):
        res.units(0, order="size")


def test_topk_and_probs(tiny_net: camviz.GapNet) -> None:
    res = tiny_net.run(torch.rand(2, 3, 32, 32))
    top = res.topk(3)
    torch.testing.assert_close(res.probs.sum(1), torch.ones(2))
    assert top.indices.tolist() == res.logits.argsort(1, descending=True)[:, :3].tolist()
    assert top.names[0] == [tiny_net.classes[i] for i in top.indices[0].tolist()]
    assert res.topk(50).indices.shape == (2, 5)


def test_images_round_trip_what_the_network_saw(tiny_net: camviz.GapNet, rgb_image) -> None:
    res = tiny_net.run([rgb_image])
    shown = res.images()
    assert shown.shape == (1, 32, 32, 3) and shown.dtype == np.uint8
    again = tiny_net.run([shown[0]])  # feeding what was shown gives the same features
    torch.testing.assert_close(again.features, res.features, rtol=1e-2, atol=1e-2)


def test_select_keeps_one_image(tiny_net: camviz.GapNet) -> None:
    res = tiny_net.run(torch.rand(3, 3, 32, 32))
    one = res.select(1)
    torch.testing.assert_close(one.cams([0, 1]), res.cams([0, 1])[1:2])
    assert len(res.select([0, 2])) == 2
    torch.testing.assert_close(res.unit_maps([3, 1])[:, 0], res.features[:, 3])
