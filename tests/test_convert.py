"""GAP conversion (camviz.convert), fine-tuning (camviz.finetune) and ``camviz fine-tune``."""

from __future__ import annotations

import copy
import functools
import os
import stat
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import TensorDataset

import camviz
from camviz import files
from camviz.cli import COMMANDS, main
from camviz.cli import finetune as cli_finetune
from camviz.convert import GapConverted, load_converted, read_converted, save_converted, to_gap
from camviz.datasets import PartsFolder
from camviz.demo.fcnet import FcNet
from camviz.errors import DatasetError, NotAGapNetwork, WeightsUnavailable
from camviz.finetune import CheckpointMismatch, Settings, dataset_classes, fine_tune, train
from camviz.sources import Source, load_source, register_source

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "demo-fixture"
SMALL = camviz.Preprocess(resize=(64, 64), crop=None, mean=(0.5,) * 3, std=(0.25,) * 3)


def tiny_fc() -> FcNet:
    """A few-channel FcNet for 64 x 64 inputs (8 x 8 map after conversion)."""
    return FcNet(channels=(8, 8, 16), convs=(1, 1, 1), hidden=16, grid=2)


register_source("tiny-fc", lambda w: Source(tiny_fc(), None, SMALL))


def trunk_only(name: str, **kw) -> nn.Module:
    """A torchvision VGG / AlexNet with a random trunk and its FC stack left on the meta device:
    the conversion drops that stack unread, and allocating VGG's 100 M FC weights would take
    most of the test's time."""
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None, **kw)
    model.features.to_empty(device="cpu")
    for m in model.features.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model.eval()


def calibrated(model: nn.Module, size: int = 96) -> nn.Module:
    """Random weights with batch-norm statistics of one random batch, so that activations and
    logits are of order one (MobileNetV3's initial ones are ~1e-10 and compare as equal)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average: one batch sets the statistics
    with torch.no_grad():
        model.train()(torch.randn(8, 3, size, size))
    return model.eval()


def _exact(net: camviz.GapNet, x: torch.Tensor) -> None:
    """The CAM identity: mean over the map of each class's CAM plus its bias is its logit."""
    res = net.run(x)
    cams = res.cams(classes=list(range(net.num_classes)))
    recon = cams.mean(dim=(2, 3)) + net.head_bias
    torch.testing.assert_close(recon, res.logits, atol=1e-4, rtol=1e-4)


def _same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------------------------- to_gap


@pytest.mark.parametrize(("name", "cells", "channels"), [
    ("vgg16", 14, 512), ("vgg16_bn", 14, 512), ("alexnet", 13, 256),
])
def test_paper_recipe_shapes_and_mapping_resolution(name: str, cells: int, channels: int) -> None:
    torch.manual_seed(0)
    src = trunk_only(name, num_classes=10)
    gap = to_gap(src, width=32).eval()
    # the paper: VGGnet-GAP maps at 14 x 14, AlexNet-GAP at 13 x 13 (224 input)
    with torch.no_grad():
        f = gap.extra(gap.features(torch.zeros(1, 3, 224, 224)))
        assert f.shape == (1, 32, cells, cells)
        assert gap(torch.randn(2, 3, 96, 96)).shape == (2, 10)
    assert not any(isinstance(m, nn.Linear) for m in gap.features.modules())
    assert not isinstance(gap.features[-1], nn.MaxPool2d)
    assert gap.extra[0].in_channels == channels and gap.extra[0].kernel_size == (3, 3)
    assert gap.new_layers == ("extra.", "fc.")
    assert gap.conversion["source"] == {"torchvision": name, "num_classes": 10}
    # the trunk keeps its weights
    own = src.features.state_dict()
    for k, v in gap.features.state_dict().items():
        assert torch.equal(v, own[k])


def test_converted_vgg_passes_the_exactness_check() -> None:
    torch.manual_seed(0)
    gap = to_gap(trunk_only("vgg11", num_classes=5), width=16, num_classes=3)
    net = camviz.GapNet.from_model(gap, device="cpu", probe_size=64)
    assert (net.num_classes, net.num_units) == (3, 16)
    _exact(net, torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("make", [tiny_fc, torchvision.models.mobilenet_v3_small])
def test_source_model_is_left_unchanged(make) -> None:
    torch.manual_seed(0)
    src = make().train()
    before = {k: v.clone() for k, v in src.state_dict().items()}
    gap = to_gap(src, width=8)
    with torch.no_grad():
        for p in gap.parameters():
            p.add_(1.0)
    assert src.training
    for k, v in src.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(("name", "width"), [("mobilenet_v3_small", 1024),
                                             ("mobilenet_v3_large", 1280)])
def test_mobilenet_v3_shapes(name: str, width: int) -> None:
    torch.manual_seed(0)
    gap = to_gap(torchvision.models.get_model(name, weights=None, num_classes=7)).eval()
    with torch.no_grad():
        assert gap(torch.randn(2, 3, 64, 64)).shape == (2, 7)
        assert gap.extra(gap.features(torch.zeros(1, 3, 224, 224))).shape == (1, width, 7, 7)
    assert isinstance(gap.extra[1], nn.Hardswish) and gap.dropout.p == 0.2


def test_mobilenet_v3_moves_the_first_linear_before_pooling() -> None:
    torch.manual_seed(0)
    src = calibrated(torchvision.models.mobilenet_v3_small(num_classes=7))
    gap = to_gap(src).eval()
    lin1, lin2 = src.classifier[0], src.classifier[3]
    # the same weights, bit for bit: fine-tuning starts from the trained head
    assert torch.equal(gap.extra[0].weight[:, :, 0, 0], lin1.weight)
    assert torch.equal(gap.extra[0].bias, lin1.bias)
    assert torch.equal(gap.fc.weight, lin2.weight) and torch.equal(gap.fc.bias, lin2.bias)
    assert gap.new_layers == () and gap.conversion["moved_layers"] == ["extra.0."]
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        feats = gap.features(x)
        # linear commutes with the mean: the pooled pre-activations are the old ones
        torch.testing.assert_close(gap.extra[0](feats).mean((2, 3)),
                                   lin1(src.avgpool(feats).flatten(1)), atol=1e-5, rtol=1e-5)
        # the activation does not: at 3 x 3 cells the logits move ...
        old = src(x)
        assert old.abs().amax() > 0.01
        assert (gap(x) - old).abs().amax() > 0.01 * old.abs().amax()
        # ... and with one cell (32 x 32 input, stride 32) the two networks are the same function
        x1 = torch.randn(2, 3, 32, 32)
        assert gap.features(x1).shape[-2:] == (1, 1)
        old = src(x1)
        torch.testing.assert_close(gap(x1), old, atol=1e-5 * float(old.abs().amax()), rtol=1e-5)
    net = camviz.GapNet.from_model(gap, device="cpu", probe_size=96)
    _exact(net, x)


def test_mobilenet_v3_new_class_count_gets_a_new_head() -> None:
    torch.manual_seed(0)
    gap = to_gap(torchvision.models.mobilenet_v3_small(num_classes=7), num_classes=3)
    assert gap.fc.out_features == 3 and gap.new_layers == ("fc.",)


def test_timm_mobilenetv3_moves_conv_head_before_pooling() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    src = calibrated(timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=6))
    gap = to_gap(src).eval()
    assert torch.equal(gap.extra[0].weight, src.conv_head.weight)
    assert torch.equal(gap.fc.weight, src.classifier.weight)
    assert gap.conversion["source"]["timm"] == "mobilenetv3_small_100"
    with torch.no_grad():
        x1 = torch.randn(2, 3, 32, 32)
        old = src(x1)
        assert old.abs().amax() > 0.01
        torch.testing.assert_close(gap(x1), old, atol=1e-5 * float(old.abs().amax()), rtol=1e-5)
    _exact(camviz.GapNet.from_model(gap, device="cpu", probe_size=64), torch.randn(2, 3, 64, 64))
    src = load_source("timm/mobilenetv3_small_100", weights=None)
    assert src.transform.crop == (224, 224) and src.transform.resize == 256
    assert type(to_gap(src.model)).__name__ == "GapConverted"


def test_top_level_names_and_the_command() -> None:
    assert (camviz.to_gap, camviz.fine_tune, camviz.load_converted) == (
        to_gap, fine_tune, load_converted)
    assert "camviz.cli.finetune" in COMMANDS
    src = load_source("demo-fc", weights=None)  # the registry's lazy "module:function" entry
    assert type(src.model) is FcNet and src.classes[:2] == ["house", "tree"]


def test_unknown_family_is_refused_with_what_to_do() -> None:
    with pytest.raises(NotAGapNetwork) as err:
        to_gap(torchvision.models.resnet18())
    msg = str(err.value)
    assert msg.startswith("to_gap does not know ResNet; it converts ['AlexNet', ")
    assert "camviz.GapNet.from_model(model)" in msg and "register_converter" in msg


def test_fc_net_is_refused_and_its_conversion_accepted() -> None:
    with pytest.raises(NotAGapNetwork, match=r"^FcNet: `classifier` is a stack of fully "
                       r"connected layers .* camviz.to_gap\(model\)"):
        camviz.GapNet.from_model(FcNet())
    with pytest.raises(NotAGapNetwork, match="demo-fc-gap"):
        camviz.load_model("demo-fc", weights=None)
    torch.manual_seed(0)
    gap = to_gap(FcNet(), width=24)
    net = camviz.GapNet.from_model(gap, device="cpu", probe_size=128)
    assert net.stride == 8 and net.num_units == 24 and gap.conversion["family"] == "demo-fc"
    _exact(net, torch.randn(2, 3, 128, 128))


# ---------------------------------------------------------------------------------- files


def test_save_and_load_converted_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    gap = to_gap(torchvision.models.mobilenet_v3_small(num_classes=3)).eval()
    path = save_converted(gap, tmp_path / "m.safetensors", classes=["a", "b", "c"],
                          transform=SMALL, training={"note": "x"})
    net = load_converted(path, device="cpu")
    assert net.classes == ["a", "b", "c"] and net.transform == SMALL
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net.model(x), gap(x))
    model, meta = read_converted(path)
    assert meta["training"] == {"note": "x"} and meta["family"] == "torchvision-mobilenetv3"
    _same_state(model, gap)


def test_load_converted_refuses_foreign_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(WeightsUnavailable, match="has no camviz conversion metadata"):
        load_converted(plain)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(WeightsUnavailable, match="is not a safetensors file"):
        load_converted(tmp_path / "junk.safetensors")
    torch.manual_seed(0)
    path = save_converted(to_gap(tiny_fc(), width=8), tmp_path / "m.safetensors")
    state = load_file(str(path))
    del state["fc.bias"]
    with safe_open(str(path), "pt") as f:  # keep the metadata, drop a tensor
        meta = f.metadata()
    save_file(state, str(tmp_path / "cut.safetensors"), metadata=meta)
    with pytest.raises(WeightsUnavailable, match="do not fit the architecture"):
        load_converted(tmp_path / "cut.safetensors")


# ---------------------------------------------------------------------------------- fine-tuning


def _fixture_data() -> PartsFolder:
    return PartsFolder(FIXTURE, transform=SMALL)


def _eval_loss(model: nn.Module, data: PartsFolder) -> float:
    x = torch.stack([data[i]["image"] for i in range(len(data))])
    y = torch.tensor(data.labels)
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model.eval()(x), y))


def test_fine_tune_lowers_the_loss_and_returns_an_exact_gapnet() -> None:
    data = _fixture_data()
    torch.manual_seed(0)
    gap = to_gap(tiny_fc(), width=16)
    before = _eval_loss(gap, data)
    net = fine_tune(gap, data, epochs=4, lr=3e-3, batch_size=8, device="cpu", progress=False,
                    classes=dataset_classes(data), transform=SMALL)
    assert _eval_loss(net.model, data) < before - 0.1
    assert net.classes[:2] == ["house", "tree"] and len(net.history) == 4
    _exact(net, torch.stack([data[i]["image"] for i in range(4)]))
    assert _eval_loss(gap, data) == before  # the model given is not changed


def test_new_layers_learn_at_their_own_rate() -> None:
    data = TensorDataset(torch.randn(16, 3, 64, 64), torch.arange(16) % 3)
    torch.manual_seed(0)
    gap = to_gap(tiny_fc(), width=8, num_classes=3)
    start = {k: v.clone() for k, v in gap.state_dict().items()}
    train(gap, data, Settings(epochs=1, lr=1e-2, batch_size=8, new_lr_mult=0.0), device="cpu",
          progress=False)
    after = gap.state_dict()
    assert all(torch.equal(after[k], start[k]) for k in start if k.startswith(("extra.", "fc.")))
    assert not torch.equal(after["features.0.weight"], start["features.0.weight"])


def test_freeze_epochs_train_only_the_new_layers() -> None:
    data = TensorDataset(torch.randn(16, 3, 64, 64), torch.arange(16) % 3)
    torch.manual_seed(0)
    gap = to_gap(tiny_fc(), width=8, num_classes=3)
    start = {k: v.clone() for k, v in gap.named_parameters()}
    train(gap, data, Settings(epochs=2, lr=1e-2, batch_size=8, freeze_epochs=1,
                              steps_per_epoch=1), device="cpu", progress=False,
          callback=lambda rec: _check_frozen(gap, start) if rec["epoch"] == 1 else None)
    assert not torch.equal(gap.features[0].weight, start["features.0.weight"])
    assert all(p.requires_grad for p in gap.parameters())


def _check_frozen(model: nn.Module, start: dict[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        assert torch.equal(p, start[name]) != name.startswith(("extra.", "fc.")), name


@pytest.mark.parametrize("autocast", ["bf16", "fp16"])
def test_autocast_training_runs_and_keeps_float32_weights(autocast: str) -> None:
    data = TensorDataset(torch.randn(16, 3, 64, 64), torch.arange(16) % 3)
    torch.manual_seed(0)
    gap = to_gap(tiny_fc(), width=8, num_classes=3)
    hist = train(gap, data, Settings(epochs=2, lr=1e-2, batch_size=8, autocast=autocast),
                 device="cpu", progress=False)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)
    assert all(p.dtype == torch.float32 for p in gap.parameters())


def test_resume_gives_the_uninterrupted_weights_bit_for_bit(tmp_path: Path) -> None:
    data = TensorDataset(torch.randn(24, 3, 64, 64), torch.arange(24) % 9)
    s = Settings(epochs=3, lr=3e-3, batch_size=8, seed=5)  # FcNet has dropout and batch norm
    torch.manual_seed(0)
    init = tiny_fc()
    whole = functools.partial(train, dataset=data, settings=s, new_layers=("classifier.",),
                              device="cpu", progress=False)
    a = _copy(init)
    hist_a = whole(a, checkpoint=tmp_path / "a.ckpt")

    def stop(rec: dict) -> None:
        if rec["epoch"] == 1:
            raise KeyboardInterrupt

    b = _copy(init)
    with pytest.raises(KeyboardInterrupt):
        whole(b, checkpoint=tmp_path / "b.ckpt", callback=stop)
    b = _copy(init)  # a fresh process: the same starting model, the checkpoint on disk
    hist_b = whole(b, checkpoint=tmp_path / "b.ckpt")
    _same_state(a, b)
    assert hist_a == hist_b
    c = _copy(init)  # a finished run resumes to its end at once
    whole(c, checkpoint=tmp_path / "b.ckpt")
    _same_state(a, c)


def _copy(m: nn.Module) -> nn.Module:
    return copy.deepcopy(m)


def test_checkpoints_of_other_runs_are_refused(tmp_path: Path) -> None:
    data = TensorDataset(torch.randn(8, 3, 64, 64), torch.arange(8) % 2)
    torch.manual_seed(0)
    m = tiny_fc()
    ck = tmp_path / "run.ckpt"
    train(_copy(m), data, Settings(epochs=1, batch_size=8), checkpoint=ck, progress=False)
    with pytest.raises(CheckpointMismatch, match=r"made with other settings \(lr: 0.001 there, "
                       r"0.01 here\); rerun with the same settings"):
        train(_copy(m), data, Settings(epochs=1, lr=0.01, batch_size=8), checkpoint=ck,
              progress=False)
    with pytest.raises(CheckpointMismatch, match="was made from another model"):
        train(tiny_fc(), data, Settings(epochs=1, batch_size=8), checkpoint=ck, progress=False)
    other = TensorDataset(torch.randn(8, 3, 64, 64), torch.arange(8) % 2)
    with pytest.raises(CheckpointMismatch, match="was made on other data"):
        train(_copy(m), other, Settings(epochs=1, batch_size=8), checkpoint=ck, progress=False)
    ck.write_bytes(b"garbage")
    with pytest.raises(CheckpointMismatch, match="loads with weights_only=True"):
        train(_copy(m), data, Settings(epochs=1, batch_size=8), checkpoint=ck, progress=False)


def test_unlabelled_data_and_bad_settings_are_refused() -> None:
    with pytest.raises(DatasetError, match="fine-tuning needs class labels"):
        dataset_classes(TensorDataset(torch.zeros(2, 1)))
    with pytest.raises(camviz.CamvizError, match="unknown fine_tune settings \\['lr_mult'\\]"):
        fine_tune(tiny_fc(), TensorDataset(torch.zeros(2, 1)), lr_mult=2)
    with pytest.raises(camviz.CamvizError, match="optimizer must be 'adamw' or 'sgd'"):
        Settings(optimizer="adam")


# ---------------------------------------------------------------------------------- CLI


def _cli(tmp: Path, out: str, *extra: str) -> int:
    return main(["fine-tune", "--model", "tiny-fc", "--weights", "none", "--to-gap",
                 "--width", "8", "--data", str(FIXTURE), "--out", str(tmp / out), "--epochs",
                 "2", "--batch-size", "8", "--steps-per-epoch", "2", "--optimizer", "sgd",
                 "--lr", "0.01", "--device", "cpu", "--no-progress", *extra])


def test_cli_resumes_after_an_interruption(tmp_path: Path, monkeypatch, capsys) -> None:
    assert _cli(tmp_path, "whole.safetensors") == 0

    def stop(rec: dict) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_finetune, "fine_tune", functools.partial(fine_tune, callback=stop))
    assert _cli(tmp_path, "cut.safetensors") == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert not (tmp_path / "cut.safetensors").exists()
    assert (tmp_path / "cut.safetensors.ckpt").is_file()
    monkeypatch.undo()
    assert _cli(tmp_path, "cut.safetensors") == 0
    assert "load it with camviz.convert.load_converted(" in capsys.readouterr().out
    whole, cut = load_file(str(tmp_path / "whole.safetensors")), load_file(
        str(tmp_path / "cut.safetensors"))
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
    net = load_converted(tmp_path / "cut.safetensors", device="cpu")
    assert net.classes == dataset_classes(_fixture_data()) and net.transform == SMALL
    # the same command with another lr is another run: its checkpoint is refused
    assert _cli(tmp_path, "cut.safetensors", "--lr", "0.02") == 2
    assert "made with other settings (lr: 0.01 there, 0.02 here)" in capsys.readouterr().err
    # a file it wrote is fine-tuned further, without --to-gap
    assert main(["fine-tune", "--model", str(tmp_path / "cut.safetensors"), "--data",
                 str(FIXTURE), "--out", str(tmp_path / "more.safetensors"), "--epochs", "1",
                 "--batch-size", "8", "--steps-per-epoch", "1", "--no-progress",
                 "--device", "cpu"]) == 0
    more = load_file(str(tmp_path / "more.safetensors"))
    assert not torch.equal(more["extra.0.weight"], cut["extra.0.weight"])


def test_cli_outputs_get_umask_permissions_and_stale_temps_are_removed(tmp_path: Path) -> None:
    dead = f"{files.TMP_PREFIX}999999999-abcd1234-"
    stale = [tmp_path / f"{dead}m.safetensors", tmp_path / f"{dead}m.safetensors.ckpt"]
    other = tmp_path / f"{dead}other.safetensors"  # another target's: not ours to remove
    live = tmp_path / f"{files.TMP_PREFIX}{os.getpid()}-abcd1234-m.safetensors"  # a live run's
    for f in (*stale, other, live):
        f.write_bytes(b"half")
    old = os.umask(0o022)
    try:
        assert main(["fine-tune", "--model", "tiny-fc", "--weights", "none", "--to-gap",
                     "--width", "8", "--data", str(FIXTURE), "--out",
                     str(tmp_path / "m.safetensors"), "--epochs", "1", "--batch-size", "8",
                     "--steps-per-epoch", "1", "--device", "cpu", "--no-progress"]) == 0
    finally:
        os.umask(old)
    for out in ("m.safetensors", "m.safetensors.ckpt"):
        assert stat.S_IMODE((tmp_path / out).stat().st_mode) == 0o644, out
    assert not any(f.exists() for f in stale)
    assert other.exists() and live.exists()
    assert {f.name for f in tmp_path.iterdir()} == {
        "m.safetensors", "m.safetensors.ckpt", other.name, live.name}


def test_cli_refusals(tmp_path: Path, capsys) -> None:
    code = main(["fine-tune", "--model", "tiny-fc", "--data", str(FIXTURE), "--out",
                 str(tmp_path / "m.safetensors")])
    assert code == 2
    assert capsys.readouterr().err.startswith(
        "camviz: error: camviz fine-tune fine-tunes networks converted to GAP: add --to-gap")
    torch.manual_seed(0)
    f = save_converted(to_gap(tiny_fc(), width=8), tmp_path / "c.safetensors")
    assert main(["fine-tune", "--model", str(f), "--to-gap", "--data", str(FIXTURE), "--out",
                 str(tmp_path / "m.safetensors")]) == 2
    assert "is a converted network already: drop --to-gap" in capsys.readouterr().err
    assert isinstance(read_converted(f)[0], GapConverted)


def test_python_m_camviz_fine_tune_trains(tmp_path: Path) -> None:
    """``python -m camviz`` is the console script's command: it once turned gradients off for
    the whole process, so fine-tune's first backward pass failed there (and only there)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "m.safetensors"
    run = subprocess.run([sys.executable, "-m", "camviz", "fine-tune", "--model", "demo-fc",
                          "--to-gap", "--width", "8", "--data", str(FIXTURE), "--out", str(out),
                          "--epochs", "1", "--batch-size", "4", "--steps-per-epoch", "1",
                          "--device", "cpu", "--no-progress"],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert load_converted(out, device="cpu").num_units == 8


# ---------------------------------------------------------------------------------- bad items


def test_a_truncated_image_and_a_label_out_of_range_are_reported_and_skipped(
        tmp_path: Path, capsys) -> None:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(FIXTURE, root)
    bad = root / "images" / "000001.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG
    labels = root / "class_labels.txt"
    lines = labels.read_text().splitlines()
    lines[2] = lines[2].split(",")[0] + ",99"
    labels.write_text("\n".join(lines) + "\n")
    data = PartsFolder(root, transform=SMALL)
    classes = dataset_classes(data)
    torch.manual_seed(0)
    gap = to_gap(tiny_fc(), width=8)
    net = fine_tune(gap, data, epochs=2, lr=1e-2, batch_size=8, device="cpu", progress=False,
                    classes=classes, transform=SMALL)
    for rec in net.history:
        failed = dict(rec["failed"])
        one, two = str(root / "images" / "000001.png"), str(root / "images" / "000002.png")
        assert sorted(failed) == [one, two]
        assert failed[two] == (
            f"label 99 is outside 0..{len(classes) - 1} (the {len(classes)} classes); left out")
        assert "000001.png" in failed[one] or "truncated" in failed[one]
        assert rec["loss"] == rec["loss"] and rec["skipped"] == 0
    # the CLI goes on and says so in its summary
    assert main(["fine-tune", "--model", "tiny-fc", "--weights", "none", "--to-gap", "--width",
                 "8", "--data", str(root), "--out", str(tmp_path / "o.safetensors"),
                 "--epochs", "1", "--batch-size", "8", "--device",
                 "cpu", "--no-progress"]) == 0
    assert f"camviz fine-tune: 2 item(s) left out, e.g. {root}" in capsys.readouterr().out


def test_a_batch_with_no_good_item_is_skipped_and_no_good_item_at_all_is_an_error() -> None:
    x = torch.randn(8, 3, 4, 4)
    y = torch.tensor([0, 1, 0, 1, 5, 5, 5, 5])  # labels 5: outside the 2 outputs
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    s = Settings(epochs=1, batch_size=4, steps_per_epoch=2, lr=1e-2, warmup=0.0)
    hist = train(model, TensorDataset(x, y), s, device="cpu", progress=False)
    assert hist[0]["skipped"] <= 1 and sorted(n for n, _ in hist[0]["failed"]) == [
        "item 4", "item 5", "item 6", "item 7"]
    assert hist[0]["failed"][0][1] == "label 5 is outside the model's 2 outputs; left out"
    one = TensorDataset(x[[4, 5, 6, 7, 0, 1, 2, 3]], y[[4, 5, 6, 7, 0, 1, 2, 3]])
    assert train(model, one, Settings(epochs=1, batch_size=4, steps_per_epoch=1, seed=3),
                 device="cpu", progress=False)[0]["epoch"] == 1
    with pytest.raises(DatasetError, match=r"no item of epoch 1 could be used \(8 left out, "
                                           r"e.g. item 0: no class label"):
        train(model, TensorDataset(x, torch.full((8,), -1)), s, device="cpu", progress=False)
