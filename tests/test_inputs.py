"""Careless and hostile inputs to the core API (issue 16): each gives a CamvizError saying what
to do, or the right answer; none changes the model or mixes two calls."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torch import nn

import camviz


def test_a_model_left_in_training_mode_runs_in_eval_mode_and_is_not_changed(tiny_net):
    model = tvm.resnet18(num_classes=4)
    net = camviz.GapNet.from_model(model, device="cpu", probe_size=64)
    x = torch.rand(2, 3, 64, 64)
    expected = net.run(x).logits
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = net.run(x).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # eval-mode maps and logits
    assert model.training and all(m.training for m in model.modules())  # mode put back
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm stats untouched


def test_uint8_tensors_are_pixels_and_other_dtypes_are_refused(tiny_net, rgb_image):
    pixels = torch.from_numpy(rgb_image).permute(2, 0, 1)  # uint8 (3, H, W)
    from_tensor = tiny_net.run(pixels).logits
    from_array = tiny_net.run([rgb_image]).logits
    torch.testing.assert_close(from_tensor, from_array, rtol=0, atol=0)
    for bad in (pixels.bool(), pixels.long(), pixels.to(torch.complex64)):
        with pytest.raises(camviz.ImageError, match="is not an image batch"):
            tiny_net.run(bad)
    x = torch.rand(1, 3, 32, 32)
    for value in (float("nan"), float("inf")):
        x[0, 0, 3, 3] = value
        with pytest.raises(camviz.ImageError, match="NaN or infinity"):
            tiny_net.run(x)


def test_threads_sharing_one_net_get_their_own_maps(tiny_net):
    xs = [torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    expected = [tiny_net.run(x).features for x in xs]
    got: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(20):
                got[i] = tiny_net.run(xs[i]).features
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(6):
        torch.testing.assert_close(got[i], expected[i], rtol=0, atol=0)


def test_bad_arguments_of_the_result_say_what_to_do(tiny_net):
    res = tiny_net.run(torch.rand(2, 3, 32, 32))
    cases = [
        (lambda: res.cams(size=0), "size must be positive"),
        (lambda: res.cams(size=(4, -1)), "size must be positive"),
        (lambda: res.topk(-1), "k must be at least 1"),
        (lambda: res.topk(0), "k must be at least 1"),
        (lambda: res.topk(2.5), r"k must be at least 1 \(a whole number\), got 2\.5"),
        (lambda: res.unit_maps([1.5]), r"unit ids must be whole numbers, got \[1\.5\]"),
        (lambda: res.units(0, k=-1), "k must be at least 1"),
        (lambda: res.unit_maps([-1]), r"unit ids must lie in 0\.\.11"),
        (lambda: res.unit_maps([12]), r"unit ids must lie in 0\.\.11"),
        (lambda: res.select(5), "image 5 out of range: this result has 2 image"),
        (lambda: res.select([0, 2]), r"images \[0, 2\] out of range"),
        (lambda: res.cams(7), r"class index out of range 0\.\.4"),
    ]
    for call, message in cases:
        with pytest.raises(camviz.CamvizError, match=message):
            call()
    assert len(res.select(-1)) == 1 and torch.equal(res.select(-1).logits, res.logits[1:])


def test_a_half_precision_model_is_refused_with_advice():
    feats = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).half()
    with pytest.raises(camviz.CamvizError, match=r"not float32.*autocast"):
        camviz.GapNet(feats, nn.Linear(4, 2).half(), device="cpu")


def test_features_that_are_not_a_map_and_foreign_classes_are_named():
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(camviz.NotAGapNetwork, match=r"gave \(2, 4\), not a \(B, K, h, w\)"):
        camviz.GapNet(pooled, nn.Linear(4, 2), device="cpu", probe_size=8)

    class EfficientNet(nn.Module):  # the name of a torchvision family, from elsewhere
        def forward(self, x):
            return x

    with pytest.raises(camviz.NotAGapNetwork, match=r"no adapter for test_inputs\.EfficientNet"
                       r"|no adapter for .*test_inputs.*EfficientNet"):
        camviz.GapNet.from_model(EfficientNet())


def test_images_of_different_sizes_cannot_share_a_batch(tiny_net):
    net = camviz.GapNet(tiny_net.model.features, tiny_net.model.head, device="cpu")
    with pytest.raises(camviz.ImageError, match="different sizes"):
        net.run([np.zeros((20, 20, 3), np.uint8), np.zeros((24, 20, 3), np.uint8)])


def test_two_models_sharing_a_trunk_keep_it_in_eval_mode_until_both_are_done():
    """A new head on the same trunk (GapNet.with_head) is another root module over the same
    submodules: one pass ending must not put the shared BatchNorm back into training mode
    while the other's pass still runs (it would update the running statistics)."""
    from camviz.hooks import eval_mode

    trunk = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    a, b = nn.Sequential(trunk, nn.Flatten()).train(), nn.Sequential(trunk, nn.ReLU()).train()
    first, second = eval_mode(a), eval_mode(b)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not trunk[1].training  # b's pass is still running
    assert a[1].training  # a's own module is a's again
    second.__exit__(None, None, None)
    assert all(m.training for m in (*a.modules(), *b.modules()))


def test_threads_on_a_net_and_its_new_head_in_training_mode_change_nothing():
    model = tvm.resnet18(num_classes=4)
    net = camviz.GapNet.from_model(model, device="cpu", probe_size=32)
    other = net.with_head(nn.Linear(512, 3))
    xs = [torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    nets = [net, other, net, other]
    expected = [n.run(x).logits for n, x in zip(nets, xs)]
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(10):
                torch.testing.assert_close(nets[i].run(xs[i]).logits, expected[i], rtol=0, atol=0)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
