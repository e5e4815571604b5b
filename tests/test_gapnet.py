"""GapNet: exactness for every family, independent recomputation, refusals, hooks, memory."""

from __future__ import annotations

import gc
import os

import psutil
import pytest
import torch
import torchvision.models as tvm
from torch import nn

import camviz
from camviz.hooks import count_hooks

# Smallest member of every family the core issue names, with constructor arguments.
FAMILIES = {
    "resnet18": {},
    "resnext50_32x4d": {},
    "wide_resnet50_2": {},
    "densenet121": {},
    "googlenet": {"init_weights": True, "aux_logits": False},
    "inception_v3": {"init_weights": True, "aux_logits": False},
    "mobilenet_v2": {},
    "efficientnet_b0": {},
    "efficientnet_v2_s": {},
    "regnet_y_400mf": {},
    "shufflenet_v2_x0_5": {},
    "mnasnet0_5": {},
    "convnext_tiny": {},
}
SIZE = 96


def _randomise(model: nn.Module) -> nn.Module:
    """Give every norm layer non-trivial statistics and affine terms, and the head a real scale,
    so logits are O(1) and a wrong fold or a missed ReLU would show."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 1.5, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.normal_(0, 0.1, generator=gen)
        elif isinstance(m, nn.LayerNorm) or type(m).__name__ == "LayerNorm2d":
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.normal_(0, 0.5, generator=gen)
        elif isinstance(m, nn.Linear):
            m.weight.data.normal_(0, 1.0 / m.in_features**0.5, generator=gen)
            m.bias.data.normal_(0, 0.5, generator=gen)
    return model.eval()


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return _randomise(tvm.get_model(name, weights=None, num_classes=7, **FAMILIES[name]))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_identity_mean_cam_plus_bias_is_logit(name: str) -> None:
    model = _build(name)
    net = camviz.GapNet.from_model(model, device="cpu", probe_size=SIZE)
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    res = net.run(x)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(res.logits, expected, rtol=0, atol=0)  # logits are the model's
    assert float(expected.abs().max()) > 0.1  # non-trivial scale, so the identity means something
    cams = res.cams(list(range(7)))
    recon = cams.mean(dim=(2, 3)) + net.head_bias
    torch.testing.assert_close(recon, expected, rtol=1e-4, atol=1e-4)
    assert count_hooks(model) == 0


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "convnext_tiny", "mobilenet_v2"])
def test_maps_match_an_independent_einsum(name: str) -> None:
    """Hook the pooling input ourselves and apply the Linear's own weights (no camviz code)."""
    model = _build(name)
    net = camviz.GapNet.from_model(model, device="cpu", probe_size=SIZE)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    grabbed = {}
    if name == "convnext_tiny":
        site, lin = model.features, model.classifier[2]
    elif name == "densenet121":
        site, lin = model.features, model.classifier
    elif name == "mobilenet_v2":
        site, lin = model.features, model.classifier[1]
    else:
        site, lin = model.layer4, model.fc
    handle = site.register_forward_hook(lambda m, i, o: grabbed.__setitem__("f", o.clone()))
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    f = grabbed["f"]
    w = lin.weight
    if name == "densenet121":
        f = torch.relu(f)
    if name == "convnext_tiny":
        ln = model.classifier[0]
        p = f.mean((2, 3))
        mu, var = p.mean(1), p.var(1, unbiased=False)
        f = (f - mu[:, None, None, None]) / torch.sqrt(var + ln.eps)[:, None, None, None]
        w = w * ln.weight
    plain = torch.einsum("ck,bkhw->bchw", w, f)
    res = net.run(x)
    torch.testing.assert_close(res.cams(list(range(7))), plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.logits, logits)


def test_batch_equals_one_by_one() -> None:
    model = _build("resnet18")
    net = camviz.GapNet.from_model(model, device="cpu", probe_size=64)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    res = net.run(x)
    batch = res.cams([0, 3, 6], size=64)
    single = torch.cat([net.run(x[i : i + 1]).cams([0, 3, 6], size=64) for i in range(4)])
    # a batch runs other conv kernels than one image (another summation order): the maps may
    # differ by float error, which scales with the sum of |w_ck f_k|, not with the map value
    terms = torch.einsum("ck,bkhw->bchw", net.head_weight[[0, 3, 6]].abs(), res.features.abs())
    scale = torch.nn.functional.interpolate(terms, size=64, mode="bilinear")
    assert bool(((batch - single).abs() <= camviz.exactness.REL_TOL * scale + 1e-6).all())


def test_gmp_network_identity_uses_the_max(tiny_net: camviz.GapNet) -> None:
    gmp = camviz.GapNet(tiny_net.model.features, tiny_net.model.head, pool="max", device="cpu")
    x = torch.rand(2, 3, 32, 32)
    res = gmp.run(x)
    for c in range(5):  # logit = sum_k w_ck max f_k + b (the max of the map itself is not it)
        u = res.units(c, k=12)
        torch.testing.assert_close(u.total + u.bias, res.logits[:, c])


REFUSED = {
    "vgg11": "stack of fully connected layers",
    "alexnet": "stack of fully connected layers",
    "squeezenet1_0": "`classifier.2` (ReLU)",
    "mobilenet_v3_small": "Linear -> Hardswish -> Dropout -> Linear",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_not_a_gap_network_names_the_module(name: str) -> None:
    with pytest.raises(camviz.NotAGapNetwork, match=__import__("re").escape(REFUSED[name])):
        camviz.GapNet.from_model(tvm.get_model(name, weights=None), device="cpu")


def test_changed_head_is_refused_with_its_name() -> None:
    model = tvm.resnet18(num_classes=4)
    model.fc = nn.Sequential(nn.Linear(512, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(camviz.NotAGapNetwork, match=r"`fc` is Sequential, not a single nn.Linear"):
        camviz.GapNet.from_model(model, device="cpu")


def test_changed_forward_fails_the_probe() -> None:
    class Doubled(tvm.ResNet):
        def forward(self, x):
            return super().forward(x) * 2 + 1

    model = Doubled(tvm.resnet.BasicBlock, [1, 1, 1, 1], num_classes=3)
    with pytest.raises(camviz.NotAGapNetwork, match=r"differs from model\(x\) on a probe batch"):
        camviz.GapNet.from_model(model, device="cpu", probe_size=64)


def test_unknown_family_and_non_linear_head() -> None:
    with pytest.raises(camviz.NotAGapNetwork, match="no adapter for torch.nn.modules.conv.Conv2d"):
        camviz.GapNet.from_model(nn.Conv2d(3, 3, 1))
    with pytest.raises(camviz.NotAGapNetwork, match="head is Sequential, not nn.Linear"):
        camviz.GapNet(nn.Conv2d(3, 4, 1), nn.Sequential(nn.Linear(4, 2)))


def test_register_adapter_teaches_a_family() -> None:
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.body(x).mean((2, 3)))

    camviz.register_adapter(Tiny, lambda m: camviz.Adapter(site="body", head="fc"))
    net = camviz.GapNet.from_model(Tiny(), device="cpu", probe_size=16)
    assert net.run(torch.rand(1, 3, 16, 16)).features.shape == (1, 4, 14, 14)


def test_no_hook_outlives_a_call_even_on_error() -> None:
    model = _build("resnet18")
    net = camviz.GapNet.from_model(model, device="cpu", probe_size=64)
    net.run(torch.rand(1, 3, 64, 64))
    assert count_hooks(model) == 0

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model.layer3 = Boom()  # the pass now fails after camviz registered its hook on layer4
    with pytest.raises(RuntimeError, match="boom"):
        net.run(torch.rand(1, 3, 64, 64))
    assert count_hooks(model) == 0


def test_not_exact_is_an_error_at_run_time(tiny_net: camviz.GapNet) -> None:
    """Tamper with the model after wrapping: the next pass must refuse, not approximate."""
    tiny_net.adapter = camviz.Adapter(site="features", head="head", post=torch.sigmoid)
    with pytest.raises(camviz.NotExact, match="miss the logits"):
        tiny_net.run(torch.rand(1, 3, 32, 32))


def test_autocast_keeps_maps_in_float32(tiny_net: camviz.GapNet) -> None:
    x = torch.rand(2, 3, 32, 32)
    full = tiny_net.run(x)
    half = tiny_net.run(x, autocast="bf16")
    assert half.features.dtype == torch.float32 and half.cams().dtype == torch.float32
    torch.testing.assert_close(
        half.cams([0, 1]).mean((2, 3)) + tiny_net.head_bias[[0, 1]],
        half.logits[:, [0, 1]],
        rtol=1e-5,
        atol=1e-5,
    )
    torch.testing.assert_close(half.logits, full.logits, rtol=0.05, atol=0.05)
    with pytest.raises(camviz.CamvizError, match="autocast must be"):
        tiny_net.run(x, autocast="int8")


def test_memory_flat_over_500_calls(tiny_net: camviz.GapNet) -> None:
    x = torch.rand(4, 3, 32, 32)
    proc = psutil.Process(os.getpid())
    for _ in range(50):
        tiny_net.run(x).cams(size=32)
    gc.collect()
    before, objects = proc.memory_info().rss, len(gc.get_objects())
    for _ in range(500):
        tiny_net.run(x).cams(size=32)
    gc.collect()
    grown = proc.memory_info().rss - before
    assert grown < 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 500 calls"
    assert len(gc.get_objects()) - objects < 1000
    assert count_hooks(tiny_net.model) == 0


def test_device_auto_falls_back_to_cpu() -> None:
    dev = camviz.resolve_device("auto")
    if not torch.cuda.is_available():
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            assert dev == torch.device("cpu")
    assert camviz.resolve_device("cpu") == torch.device("cpu")


def test_load_model_random_weights_has_names_and_transform() -> None:
    net = camviz.load_model("resnet18", weights=None, device="cpu")
    assert net.classes[0] == "tench" and len(net.classes) == 1000
    assert net.transform.crop == (224, 224) and net.transform.resize == 256


def test_load_model_offline_is_a_clear_error(monkeypatch, tmp_path) -> None:
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(camviz.WeightsUnavailable, match=r"could not download .*weights=None"):
        camviz.load_model("resnet18")
    assert not any(tmp_path.rglob("*.pth"))


def test_load_model_refuses_pickled_objects(monkeypatch, tmp_path) -> None:
    """A cached checkpoint that is not a plain state dict never reaches an unsafe torch.load."""
    import pickle

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = tvm.ResNet18_Weights.DEFAULT.url
    path = camviz.models.checkpoint_path(url)
    path.parent.mkdir(parents=True)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(camviz.WeightsUnavailable, match="weights_only=True"):
        camviz.load_model("resnet18")


def test_unknown_model_suggests_names() -> None:
    with pytest.raises(camviz.UnknownModel, match="Did you mean resnet50"):
        camviz.load_model("resnet5O")
    with pytest.raises(camviz.WeightsUnavailable, match="has no weights 'NOPE'"):
        camviz.load_model("resnet18", weights="NOPE")


@pytest.mark.parametrize("name", ["resnet18", "convnext_tiny", "densenet121"])
def test_with_head_shares_the_trunk_and_stays_exact(name: str) -> None:
    model = _build(name)
    net = camviz.GapNet.from_model(model, device="cpu", probe_size=SIZE)
    torch.manual_seed(5)
    head = nn.Linear(net.num_units, 3)
    new = net.with_head(head, classes=["x", "y", "z"])
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    a, b = net.run(x), new.run(x)
    torch.testing.assert_close(a.features, b.features, rtol=0, atol=0)  # the same trunk
    assert b.logits.shape == (2, 3) and new.classes == ["x", "y", "z"]
    torch.testing.assert_close(b.cams([0, 1, 2]).mean((2, 3)) + new.head_bias, b.logits,
                               rtol=1e-4, atol=1e-4)
    assert net.num_classes == 7 and model.get_submodule(net.adapter.head).out_features == 7
    shared = {id(p) for p in net.model.parameters()} & {id(p) for p in new.model.parameters()}
    assert len(shared) == len(list(net.model.parameters())) - 2  # all but the old weight, bias
    with pytest.raises(camviz.CamvizError, match="nn.Linear of"):
        net.with_head(nn.Linear(5, 3))


def test_load_model_gives_the_model_in_eval_mode():
    net = camviz.load_model("resnet18", weights=None, device="cpu")
    assert not any(m.training for m in net.model.modules())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(net.model(x), net.run(x).logits, rtol=1e-4, atol=1e-4)
