"""Class units, unit masks (threshold semantics), galleries and dissection against known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import camviz
from camviz.datasets import PartsFolder
from camviz.dissect import Dissection, dissect
from camviz.errors import CamvizError, DatasetError, UnsafePath
from camviz.galleries import class_gallery, show_mask, unit_gallery, units_on_image
from camviz.scan import scan
from camviz.units import class_units, threshold_masks, unit_masks


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMVIZ_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------ contributions and ranking


def test_contributions_sum_to_logit_minus_bias(tiny_net):
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = tiny_net.run(x)
    k = tiny_net.num_units
    for c in range(tiny_net.num_classes):
        u = res.units(c, k=k, order="contribution")
        target = res.logits[:, c] - tiny_net.head_bias[c]
        assert torch.allclose(u.contributions.sum(1), target, atol=1e-5)
        assert torch.allclose(u.total, target, atol=1e-5)
        # contribution of unit k = w_ck * mean_xy f_k, independently
        ref = tiny_net.head_weight[c][u.ids] * res.features.mean((2, 3)).gather(1, u.ids)
        assert torch.allclose(u.contributions, ref, atol=1e-6)


def test_class_units_rank_by_head_weight(tiny_net):
    for c in range(tiny_net.num_classes):
        ids, w = class_units(tiny_net, c, k=4)
        ref = torch.argsort(tiny_net.head_weight[c], descending=True)[:4]
        assert ids.tolist() == ref.tolist()
        assert torch.equal(w, tiny_net.head_weight[c][ref])
    assert class_units(tiny_net, "b", k=2)[0].tolist() == class_units(tiny_net, 1, k=2)[0].tolist()
    with pytest.raises(CamvizError, match="unknown class"):
        class_units(tiny_net, "zebra")


# ------------------------------------------------------------------ mask semantics


def test_mask_is_strictly_above_threshold():
    maps = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    assert threshold_masks(maps, torch.tensor([2.0]), None)[0, 0].tolist() == [
        [False, False], [False, True]]  # 2.0 == T is outside
    assert not threshold_masks(maps, torch.tensor([3.0]), None).any()  # max == T: empty
    assert not threshold_masks(maps, torch.tensor([3.0]), (64, 64)).any()
    assert not threshold_masks(maps, torch.tensor([5.0]), (7, 9)).any()  # max below T: empty
    assert threshold_masks(maps, torch.tensor([-1.0]), (7, 9)).all()


def test_mask_is_bilinear_upsample_then_threshold():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 3, 4, 4, generator=g)
    t = torch.tensor([0.5, 0.7, 0.9])
    got = threshold_masks(maps, t, (16, 16))
    up = F.interpolate(maps, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.equal(got, up > t[None, :, None, None])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=9, max_size=9),
    st.floats(-3, 3, allow_nan=False, width=32),
    st.integers(3, 20),
)
def test_mask_empty_iff_max_not_above_threshold(values, t, size):
    maps = torch.tensor(values).reshape(1, 1, 3, 3)
    tt = torch.tensor([t])
    cells = threshold_masks(maps, tt, None)
    assert bool(cells.any()) == bool(maps.max() > tt)
    if maps.max() <= tt:  # empty at any resolution: bilinear never exceeds the max cell
        assert not threshold_masks(maps, tt, (size, size)).any()


def test_unit_masks_use_scan_thresholds(tiny_net):
    data = [torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(12)]
    stats = scan(tiny_net, data, cache=False, progress=False)
    res = tiny_net.run(torch.stack(data[:3]))
    ids = [0, 5, 7]
    m = unit_masks(res, stats, ids, level=0.9)
    t = stats.thresholds(0.9)[ids]
    up = F.interpolate(res.features[:, ids], size=(32, 32), mode="bilinear", align_corners=False)
    assert m.shape == (3, 3, 32, 32) and torch.equal(m, up > t[None, :, None, None])
    # per-image ids (B, n), e.g. a class's top units
    u = res.units(2, k=3)
    assert unit_masks(res, stats, u.ids).shape == (3, 3, 32, 32)
    assert unit_masks(res, stats, ids, size=None).shape == (3, 3, 8, 8)
    with pytest.raises(CamvizError, match="thresholds"):
        unit_masks(res, torch.zeros(3), ids)


def test_show_mask_dims_outside_and_outlines():
    img = np.full((10, 10, 3), 100, np.uint8)
    m = np.zeros((10, 10), bool)
    m[2:8, 2:8] = True
    out = show_mask(img, m)
    assert out[0, 0].tolist() == [35, 35, 35]  # outside dimmed
    assert out[5, 5].tolist() == [100, 100, 100]  # inside kept
    assert out[2, 5].tolist() == [255, 255, 0]  # outline on the mask's edge


def _tile(panel, j, row=0, side=32, pad=4, label=16):
    """Tile (row, j) of a render.grid panel with captions (its default pad and label height)."""
    a = np.asarray(panel)
    x0, y0 = pad + j * (side + pad), pad + row * (side + pad + label) + label
    return a[y0 : y0 + side, x0 : x0 + side]


def _masked(net, stats, x, unit):
    res = net.run(x)
    masks = unit_masks(res, stats, [unit])[:, 0]
    return [show_mask(img, m) for img, m in zip(res.images(), masks, strict=True)]


def test_unit_gallery_shows_its_top_images_masked(tiny_net):
    data = [(torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(i)), i % 5)
            for i in range(10)]
    stats = scan(tiny_net, data, top_n=4, cache=False, progress=False)
    unit = 3
    # the top images are the ones whose map of the unit peaks highest, best first
    peaks = tiny_net.run(torch.stack([d[0] for d in data])).features[:, unit].amax((1, 2))
    idx = stats.top_images(unit, 4)[0]
    assert idx.tolist() == peaks.argsort(descending=True)[:4].tolist()
    expected = _masked(tiny_net, stats, torch.stack([data[i][0] for i in idx.tolist()]), unit)
    g = unit_gallery(tiny_net, data, stats, unit=unit, n=4)
    for j, tile in enumerate(expected):
        assert np.array_equal(_tile(g, j), tile)


def test_class_gallery_rows_are_the_top_units_by_weight(tiny_net):
    data = [(torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(i)), i % 5)
            for i in range(10)]
    stats = scan(tiny_net, data, top_n=4, cache=False, progress=False)
    cg = class_gallery(tiny_net, data, stats, "c", k=3, n=2)
    order = tiny_net.head_weight[2].argsort(descending=True)[:3].tolist()
    for row, unit in enumerate(order):
        idx = stats.top_images(unit, 2)[0]
        expected = _masked(tiny_net, stats, torch.stack([data[i][0] for i in idx.tolist()]), unit)
        for j, tile in enumerate(expected):
            assert np.array_equal(_tile(cg, j, row), tile)


def test_units_on_image_shows_the_image_then_its_top_units(tiny_net):
    data = [torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    stats = scan(tiny_net, data, cache=False, progress=False)
    res = tiny_net.run(torch.stack(data[:2]))
    panel = units_on_image(res, stats, 1, k=3, index=1)
    img = res.images()[1]
    assert np.array_equal(_tile(panel, 0), img)
    for j, unit in enumerate(tiny_net.head_weight[1].argsort(descending=True)[:3].tolist()):
        assert np.array_equal(_tile(panel, j + 1), _masked(tiny_net, stats, data[1][None], unit)[0])


# ------------------------------------------------------------------ dissection


class PartsWorld(torch.utils.data.Dataset):
    """Channel 0 lights part 'a' exactly, channel 2 part 'b', channel 1 is noise."""

    def __init__(self, n: int = 12):
        g = torch.Generator().manual_seed(0)
        self.items = []
        for _ in range(n):
            a = torch.zeros(16, 16, dtype=torch.bool)
            b = torch.zeros(16, 16, dtype=torch.bool)
            r, c = torch.randint(0, 8, (2,), generator=g).tolist()
            a[r:r + 6, c:c + 6] = True
            r, c = torch.randint(0, 12, (2,), generator=g).tolist()
            b[r:r + 4, c:c + 4] = True
            x = torch.stack([a.float() * (1 + torch.rand(16, 16, generator=g)),
                             torch.randn(16, 16, generator=g),
                             b.float() * (1 + torch.rand(16, 16, generator=g))])
            self.items.append({"image": x, "label": 0, "parts": {"a": a, "b": b}})
        self.part_names = ["a", "b", "c"]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _identity_net():
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3)[..., None, None])
    head = nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]]))
    return camviz.GapNet(nn.Sequential(conv, nn.ReLU()), head, classes=["x", "y"], device="cpu")


def test_dissection_finds_the_planted_detectors():
    net, data = _identity_net(), PartsWorld()
    stats = scan(net, data, cache=False, progress=False)
    # level 0.6: more than 60% of cells are exactly 0 in units 0 and 2 -> T = 0 -> mask = part
    assert stats.thresholds(0.6)[[0, 2]].tolist() == [0.0, 0.0]
    d = dissect(net, data, stats, level=0.6, progress=False)
    assert d.parts == ["a", "b", "c"] and d.num_images == 12
    assert d.iou[0, 0].item() == 1.0 and d.iou[2, 1].item() == 1.0
    assert d.iou[:, 2].eq(0).all()  # part 'c' never occurs
    assert d.labels[0] == "a" and d.labels[2] == "b"
    # exact counts for the noise unit against part a, by hand
    t = stats.thresholds(0.6)[1]
    inter = union = 0
    for item in data.items:
        m = item["image"][1].clamp(min=0) > t
        inter += int((m & item["parts"]["a"]).sum())
        union += int((m | item["parts"]["a"]).sum())
    assert d.intersection[1, 0].item() == inter and d.union[1, 0].item() == union
    assert d.detectors()["a"][0] == 0
    rows = d.class_summary(net, k=2)
    assert rows[0]["units"][0] == {"unit": 0, "weight": 2.0, "part": "a", "iou": 1.0}
    assert rows[1]["detectors"] == 1 + (d.labels[1] is not None) and "b" in rows[1]["parts"]
    assert "| x |" in d.table(net, k=2)
    assert d.to_dict(net)["units"][2]["label"] == "b"
    small = dissect(net, data, stats, level=0.6, progress=False, mask_size=8)
    assert small.labels[0] == "a" and small.labels[2] == "b"
    assert small.union.sum() < d.union.sum() / 2  # counted at 8 x 8, not 16 x 16


def test_dissection_iou_threshold_labels():
    d = Dissection(["p", "q", "r"], torch.tensor([[3.0, 1.0, 0], [0.39, 0.0, 0], [0, 0, 0.4]],
                                                dtype=torch.float64),
                   torch.full((3, 3), 10.0), 0.995)
    assert d.labels == ["p", None, "r"]  # 0.039 < 0.04 <= 0.04
    d.iou_threshold = 0.039
    assert d.labels == ["p", "p", "r"]


def test_dissect_needs_part_masks(tiny_net):
    data = [torch.randn(3, 32, 32)]
    stats = scan(tiny_net, data, cache=False, progress=False)
    with pytest.raises(DatasetError, match="part masks"):
        dissect(tiny_net, data, stats, progress=False)


def test_parts_folder_reads_the_demo_layout_and_refuses_escapes(tmp_path):
    from camviz.demo import demo_transform, render_sample, write_split

    root = write_split("test", 3, tmp_path / "split", progress=False)
    ds = PartsFolder(root, transform=demo_transform())
    assert len(ds) == 3 and set(ds.part_names) >= {"disc", "bar"}
    item = ds[1]
    s = render_sample("test", 1)
    assert item["image"].shape == (3, 128, 128) and item["label"] == s.label
    assert set(item["parts"]) == set(s.parts)
    for name, m in s.parts.items():
        assert torch.equal(item["parts"][name], torch.from_numpy(m))
    (root / "parts.txt").write_text("images/000000.png,disc,../../etc/passwd\n")
    with pytest.raises(UnsafePath, match="leaves its root"):
        PartsFolder(root)


# ------------------------------------------------------------------ CLI and docstrings


def test_cli_scan_then_dissect_on_the_demo_fixture(tmp_path, capsys):
    from pathlib import Path

    from camviz.cli import main
    from camviz.scan import UnitStats

    fixture = Path(__file__).resolve().parents[1] / "data" / "demo-fixture"
    out = tmp_path / "stats.npz"
    # the bundled weights: two random-weight loads are two networks, whose statistics are
    # refused for each other (see test_stats_of_another_network_are_refused)
    common = ["--model", "demo", "--data", str(fixture), "--device", "cpu", "--no-progress"]
    assert main(["scan", *common, "--out", str(out)]) == 0
    stats = UnitStats.load(out)
    net = camviz.load_model("demo", device="cpu")
    feats = net.run(torch.zeros(1, 3, 128, 128)).features
    assert stats.num_images == 32 and stats.num_units == net.num_units
    assert stats.feature_size == tuple(feats.shape[-2:])
    assert main(["dissect", *common, "--stats", str(out), "--out", str(tmp_path / "d"),
                 "--top-k", "3"]) == 0
    import json

    report = json.loads((tmp_path / "d" / "dissection.json").read_text())
    assert report["num_images"] == 32 and len(report["units"]) == net.num_units
    assert len(report["classes"]) == 9 and len(report["classes"][0]["units"]) == 3
    assert "| class |" in (tmp_path / "d" / "dissection.md").read_text()
    capsys.readouterr()
    # a folder without parts.txt cannot be dissected: one-line error, exit 2
    bad = [*common[:3], str(tmp_path), *common[4:]]
    assert main(["dissect", *bad, "--out", str(tmp_path / "e")]) == 2
    assert "no parts.txt" in capsys.readouterr().err


def test_cli_data_specs_resolve_to_datasets(tmp_path):
    import shutil
    from pathlib import Path

    from camviz.datasets import ImageFiles, WsolDataset, resolve_data

    fixture = Path(__file__).resolve().parents[1] / "data" / "demo-fixture"
    assert isinstance(resolve_data(str(fixture)), PartsFolder)
    meta = tmp_path / "meta"
    shutil.copytree(fixture / "images", meta / "images")
    for name in ("image_ids.txt", "class_labels.txt"):
        shutil.copy(fixture / name, meta / name)
    assert isinstance(resolve_data(str(meta)), WsolDataset)  # labels from class_labels.txt
    with pytest.raises(DatasetError, match="no parts.txt"):
        resolve_data(str(meta), need="parts")
    files = resolve_data(str(meta / "images"))
    assert isinstance(files, ImageFiles) and len(files) == 32
    with pytest.raises(DatasetError, match="demo:SPLIT:N"):
        resolve_data("demo:test:many")
