"""camviz.scan: one pass -> UnitStats, checked against direct computation over all features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

import camviz
from camviz.errors import CamvizError, DatasetError
from camviz.scan import UnitStats, dataset_fingerprint, model_fingerprint, scan


class Pictures(Dataset):
    """Deterministic (3, 32, 32) tensors; item kind selectable; extra un-collatable keys."""

    def __init__(self, n: int = 23, kind: str = "tuple", seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 32, 32, generator=g)
        self.y = torch.randint(0, 5, (n,), generator=g)
        self.kind = kind

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if self.kind == "tensor":
            return self.x[i]
        if self.kind == "dict":  # like the datasets module: masks of any size, None values
            return {"image": self.x[i], "label": int(self.y[i]), "mask": torch.zeros(i + 1),
                    "box": None, "path": f"img{i}.png"}
        return self.x[i], self.y[i]


def _all_features(net, data):
    res = net.run(data.x)
    return res, res.features


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMVIZ_CACHE", str(tmp_path / "cache"))


def test_scan_matches_direct_computation(tiny_net):
    data = Pictures()
    st = scan(tiny_net, data, batch_size=5, top_n=4, cache=False, progress=False)
    res, f = _all_features(tiny_net, data)
    k = f.shape[1]
    assert st.num_images == 23 and st.num_units == k == 12
    assert st.feature_size == (8, 8) and st.input_size == (32, 32)
    # quantiles: below sketch capacity the sketch is exact (lower inverse CDF)
    cells = f.transpose(0, 1).reshape(k, -1)
    srt = cells.sort(dim=1).values
    n = cells.shape[1]
    for q in (0.5, 0.9, 0.995):
        assert torch.equal(st.thresholds(q), srt[:, int(np.ceil(q * n - 1e-6)) - 1])
    # top images by spatial max, ties to the smaller index
    smax = f.amax(dim=(2, 3))
    for unit in range(k):
        idx, val = st.top_images(unit)
        ref = sorted(range(23), key=lambda i: (-smax[i, unit].item(), i))[:4]
        assert idx.tolist() == ref
        assert torch.equal(val, smax[ref, unit])
    # per-class mean contributions by label sum (with the bias) to the mean logit of the class
    contrib = st.class_contributions("label")
    for c in range(5):
        sel = data.y == c
        if sel.any():
            mean_logit = res.logits[sel, c].double().mean()
            total = contrib[c].double().sum() + tiny_net.head_bias[c].double()
            assert torch.allclose(total, mean_logit, atol=1e-4)
    assert int(st.label_count.sum()) == 23 and int(st.pred_count.sum()) == 23
    pred = res.logits.argmax(1)
    assert st.pred_count.tolist() == torch.bincount(pred, minlength=5).tolist()
    mean_all = st.class_contributions("all").double().sum(1) + tiny_net.head_bias.double()
    assert torch.allclose(mean_all, res.logits.double().mean(0), atol=1e-4)


@pytest.mark.parametrize("kind", ["tensor", "dict"])
def test_item_kinds_give_the_same_stats(tiny_net, kind):
    ref = scan(tiny_net, Pictures(kind="tuple"), batch_size=6, cache=False, progress=False)
    st = scan(tiny_net, Pictures(kind=kind), batch_size=6, cache=False, progress=False)
    assert torch.equal(st.thresholds(), ref.thresholds())
    assert torch.equal(st.top.indices, ref.top.indices)
    if kind == "tensor":  # no labels: nothing per label, everything per prediction
        assert int(st.label_count.sum()) == 0 and int(st.pred_count.sum()) == 23
    else:
        assert torch.equal(st.label_count, ref.label_count)


def test_pil_items_use_the_network_transform(tiny_net):
    rng = np.random.default_rng(0)
    pics = [(Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)), 1)
            for _ in range(3)]
    st = scan(tiny_net, pics, cache=False, progress=False)
    assert st.input_size == (32, 32) and st.label_count[1] == 3


def test_bad_items_say_what_to_do(tiny_net):
    with pytest.raises(DatasetError, match="'image' key"):
        scan(tiny_net, [{"img": torch.zeros(3, 8, 8)}], cache=False, progress=False)
    with pytest.raises(DatasetError, match=r"\(3, H, W\)"):
        scan(tiny_net, [torch.zeros(1, 8, 8)], cache=False, progress=False)
    with pytest.raises(DatasetError, match="crop"):
        scan(tiny_net, [torch.zeros(3, 8, 8), torch.zeros(3, 9, 9)], cache=False, progress=False)
    with pytest.raises(DatasetError, match="empty"):
        scan(tiny_net, [], cache=False, progress=False)


def test_save_load_round_trip_without_pickle(tiny_net, tmp_path):
    st = scan(tiny_net, Pictures(), batch_size=7, cache=False, progress=False)
    path = st.save(tmp_path / "stats.npz")
    with np.load(path, allow_pickle=False) as z:  # loads with pickle off
        assert "quantiles.samples" in z.files
    back = UnitStats.load(path)
    assert torch.equal(back.thresholds(0.99), st.thresholds(0.99))
    assert torch.equal(back.top.indices, st.top.indices)
    assert torch.equal(back.label_sum, st.label_sum) and back.classes == st.classes
    assert back.feature_size == st.feature_size and back.meta["model"] == st.meta["model"]
    assert torch.equal(back.class_contributions(), st.class_contributions())
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CamvizError, match="rescan"):
        UnitStats.load(tmp_path / "junk.npz")


def test_cache_hit_skips_the_pass_and_changes_invalidate(tiny_net, tmp_path, monkeypatch):
    data = Pictures()
    first = scan(tiny_net, data, cache=True, progress=False)
    files = list((tmp_path / "cache" / "scans").glob("*.npz"))
    assert len(files) == 1

    def boom(*a, **k):
        raise AssertionError("network ran although the scan was cached")

    monkeypatch.setattr(tiny_net, "run", boom)
    again = scan(tiny_net, data, cache=True, progress=False)
    assert torch.equal(again.thresholds(), first.thresholds())
    monkeypatch.undo()
    monkeypatch.setenv("CAMVIZ_CACHE", str(tmp_path / "cache"))
    fp = model_fingerprint(tiny_net)
    with torch.no_grad():
        tiny_net.head_weight  # noqa: B018 - read only
        tiny_net.model.head.weight[0, 0] += 1.0
    assert model_fingerprint(tiny_net) != fp
    fp = model_fingerprint(tiny_net)
    tiny_net.model.features[0].dilation = (2, 2)  # same weights, another network
    assert model_fingerprint(tiny_net) != fp
    tiny_net.model.features[0].dilation = (1, 1)
    assert dataset_fingerprint(Pictures(seed=1)) != dataset_fingerprint(data)
    assert dataset_fingerprint(Pictures(n=22)) != dataset_fingerprint(data)
    scan(tiny_net, data, cache=True, progress=False)
    assert len(list((tmp_path / "cache" / "scans").glob("*.npz"))) == 2


def test_sharded_scans_merge_into_the_whole(tiny_net):
    data = Pictures(n=30)
    whole = scan(tiny_net, data, batch_size=8, top_n=5, cache=False, progress=False)
    a = scan(tiny_net, torch.utils.data.Subset(data, range(0, 13)), top_n=5, cache=False,
             progress=False)
    b = scan(tiny_net, torch.utils.data.Subset(data, range(13, 30)), top_n=5, cache=False,
             progress=False)
    b.top.indices = torch.where(b.top.indices >= 0, b.top.indices + 13, b.top.indices)
    merged = a.merge(b)
    assert merged.num_images == 30
    assert torch.equal(merged.top.indices, whole.top.indices)
    assert torch.equal(merged.top.values, whole.top.values)
    assert torch.equal(merged.thresholds(0.9), whole.thresholds(0.9))  # exact below capacity
    assert torch.allclose(merged.label_sum, whole.label_sum)


def test_memory_is_flat_in_dataset_size(tiny_net):
    small = scan(tiny_net, Pictures(n=8), resolution=64, cache=False, progress=False)
    big = scan(tiny_net, Pictures(n=120), resolution=64, cache=False, progress=False)
    bound = 3 * 64 + 8 * len(big.quantiles.levels)
    assert big.quantiles.count == 120 * 64 and big.quantiles.num_samples <= bound
    sizes = [sum(v.numel() for v in s.top.state_dict().values()) for s in (small, big)]
    assert sizes[0] == sizes[1]


def test_scan_is_exported():
    assert camviz.scan is scan and camviz.UnitStats is UnitStats


def test_folders_with_the_same_ids_have_different_fingerprints(tmp_path):
    from camviz.datasets import PartsFolder
    from camviz.demo import demo_transform, write_split

    a = PartsFolder(write_split("test", 2, tmp_path / "a", progress=False), demo_transform())
    b = PartsFolder(write_split("val", 2, tmp_path / "b", progress=False), demo_transform())
    assert a.image_ids == b.image_ids
    assert dataset_fingerprint(a) != dataset_fingerprint(b)
    assert dataset_fingerprint(a) == dataset_fingerprint(
        PartsFolder(tmp_path / "a", demo_transform()))


def test_worker_processes_give_the_same_stats(tiny_net):
    data = Pictures(kind="dict")
    one = scan(tiny_net, data, batch_size=4, cache=False, progress=False)
    two = scan(tiny_net, data, batch_size=4, num_workers=2, cache=False, progress=False)
    assert torch.equal(one.thresholds(), two.thresholds())
    assert torch.equal(one.top.indices, two.top.indices)
