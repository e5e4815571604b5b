"""Issue 16, items 2, 3, 5, 10 and 11: scan caches keyed on every item and the preprocessing;
statistics of another network refused; uint8 tensor items are pixels (other dtypes refused); one
bad item (an unreadable image or mask, a decompression bomb, an image the transform refuses, a
tensor that is not an image, a label out of range, all-empty masks, a damaged cache entry) is
reported with its path and skipped, never the end of the job, and nothing else is lost or
mixed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Subset

import camviz
from camviz.datasets import ImageFolder, PartsFolder, WsolMetadata
from camviz.errors import CamvizError
from camviz.gapnet import trunk_fingerprint
from camviz.scan import scan, scan_cache_dir
from camviz.unitstats import state_arrays

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "demo-fixture"
META = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt",
        "localization_masks.txt", "parts.txt", "distractors.txt")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMVIZ_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def demo():
    return camviz.load_model("demo", device="cpu")


def _fixture(tmp_path: Path, n: int = 6) -> Path:
    """A copy of the demo fixture with its first ``n`` images."""
    root = tmp_path / "fixture"
    shutil.copytree(FIXTURE, root)
    keep = {line.split(",")[0] for line in (root / "image_ids.txt").read_text().splitlines()[:n]}
    for name in META:
        f = root / name
        lines = [ln for ln in f.read_text().splitlines() if ln.split(",")[0] in keep]
        f.write_text("\n".join(lines) + "\n")
    return root


def _folder(tmp_path: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for i in range(n):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(
            root / f"c{i % 2}" / f"{i:02d}.png")
    return root


def _arrays_equal(a, b) -> bool:
    sa, sb = state_arrays(a), state_arrays(b)
    return all(np.array_equal(sa[k], sb[k]) for k in sa if k != "info")


# ------------------------------------------------------------------ item 2: cache keys


def test_an_image_edited_in_place_is_rescanned(tiny_net, tmp_path):
    root = _folder(tmp_path, n=40)
    ds = ImageFolder(root, transform=tiny_net.transform)
    first = scan(tiny_net, ds, progress=False)
    # image 13 is none of the 8 items the old fingerprint sampled (0, 6, 11, 17, ...)
    victim = ds.paths[13]
    Image.new("RGB", (32, 32), (255, 0, 0)).save(victim)
    fresh = scan(tiny_net, ImageFolder(root, transform=tiny_net.transform), cache=False,
                 progress=False)
    again = scan(tiny_net, ImageFolder(root, transform=tiny_net.transform), progress=False)
    assert not _arrays_equal(first, fresh)
    assert _arrays_equal(again, fresh)  # recomputed, not the stale entry
    assert len(list(scan_cache_dir().glob("*.npz"))) == 2


def test_other_preprocessing_is_another_cache_entry(tiny_net, tmp_path):
    root = _folder(tmp_path)
    a = scan(tiny_net, ImageFolder(root, transform=tiny_net.transform), progress=False)
    other = camviz.Preprocess(resize=(32, 32), mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2))
    b = scan(tiny_net, ImageFolder(root, transform=other), progress=False)
    assert a.meta["dataset"] != b.meta["dataset"] and not _arrays_equal(a, b)
    assert len(list(scan_cache_dir().glob("*.npz"))) == 2


# ------------------------------------------------------------------ item 3: another network


def test_statistics_of_another_network_are_refused(tiny_net, tmp_path):
    data = [(torch.rand(3, 32, 32), i % 5) for i in range(6)]
    stats = scan(tiny_net, data, cache=False, progress=False)
    torch.manual_seed(1)
    other = camviz.GapNet(nn.Sequential(nn.Conv2d(3, 12, 3, stride=4), nn.ReLU()),
                          nn.Linear(12, 5), device="cpu", transform=tiny_net.transform)
    assert other.num_units == stats.num_units
    msg = ("these unit statistics were scanned with another network (trunk fingerprint "
           f"{trunk_fingerprint(tiny_net)}; this network's is {trunk_fingerprint(other)})")
    res = other.run(torch.rand(2, 3, 32, 32))
    with pytest.raises(CamvizError) as err:
        camviz.unit_masks(res, stats, [0, 1])
    assert str(err.value).startswith(msg)
    parts = [{"image": x, "parts": {"p": torch.ones(32, 32, dtype=torch.bool)}} for x, _ in data]
    with pytest.raises(CamvizError, match="scanned with another network"):
        camviz.dissect(other, parts, stats, progress=False)
    from camviz.widgets import Browser

    with pytest.raises(CamvizError, match="scanned with another network"):
        Browser(other, [torch.rand(3, 32, 32)], stats=stats)
    path = stats.save(tmp_path / "s.npz")  # the check survives the file
    with pytest.raises(CamvizError, match="scanned with another network"):
        camviz.unit_masks(res, camviz.UnitStats.load(path), [0])
    # a new head on the same trunk is the same network for its units
    new = tiny_net.with_head(nn.Linear(12, 3), classes=["x", "y", "z"])
    masks = camviz.unit_masks(new.run(data[0][0][None]), stats, [0, 1])
    assert torch.equal(masks, camviz.unit_masks(tiny_net.run(data[0][0][None]), stats, [0, 1]))


def test_the_trunk_fingerprint_is_cached_and_follows_the_weights(tiny_net):
    fp = trunk_fingerprint(tiny_net)
    assert tiny_net.run(torch.rand(1, 3, 32, 32)).trunk == fp
    with torch.no_grad():
        tiny_net.model.head.weight += 1  # the head: not the trunk
    assert trunk_fingerprint(tiny_net) == fp
    with torch.no_grad():
        tiny_net.model.features[0].weight[0, 0, 0, 0] += 1  # in place: seen by the version
    assert trunk_fingerprint(tiny_net) != fp


# ------------------------------------------------------------------ item 11: bad items


def test_scan_and_dissect_skip_an_unreadable_image_and_report_its_path(demo, tmp_path):
    root = _fixture(tmp_path, n=6)
    ds = PartsFolder(root, transform=demo.transform)
    bad = ds.paths[2]
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG
    st = scan(demo, ds, batch_size=4, cache=False, progress=False)
    assert st.meta["failed"][0][0] == str(bad) and len(st.meta["failed"]) == 1
    assert "truncated" in st.meta["failed"][0][1] or "corrupt" in st.meta["failed"][0][1]
    good = [0, 1, 3, 4, 5]
    ref = scan(demo, Subset(ds, good), batch_size=5, cache=False, progress=False)
    assert st.num_images == 5
    # top images keep the dataset's indices: nothing shifted by the failure
    mapped = torch.where(ref.top.indices >= 0, torch.tensor(good)[ref.top.indices.clamp(min=0)],
                         -1)
    assert torch.equal(st.top.indices, mapped)
    assert torch.equal(st.label_count, ref.label_count)
    d = camviz.dissect(demo, ds, st, batch_size=4, progress=False)
    assert d.num_images == 5 and d.meta["failed"][0][0] == str(bad)
    ref_d = camviz.dissect(demo, Subset(ds, good), st, parts=ds.part_names, batch_size=5,
                           progress=False)
    assert torch.equal(d.intersection, ref_d.intersection)
    met = camviz.dissect(demo, Subset(ds, good), st, batch_size=5, progress=False).parts
    assert len(met) == len(set(met))  # names met in the data, each once


def test_dissect_skips_an_unreadable_part_mask(demo, tmp_path):
    root = _fixture(tmp_path, n=4)
    ds = PartsFolder(root, transform=demo.transform)
    mask = ds.parts[ds.image_ids[1]][0][1]
    mask.write_bytes(b"not a png")
    st = scan(demo, ds, cache=False, progress=False)
    d = camviz.dissect(demo, ds, st, progress=False)
    assert d.num_images == 3 and d.meta["failed"][0][0] == str(ds.paths[1])
    assert f"cannot read mask {mask}" in d.meta["failed"][0][1]


def _eval(net, root, **kw):
    out = camviz.evaluate(net, WsolMetadata(root), batch_size=4, progress=False, **kw)
    out.pop("seconds")
    return out


SCORES = ("top1_cls", "gt_known_loc", "MaxBoxAccV2", "MaxBoxAccV1", "PxAP", "curves")


def _without(root: Path, image_id: str) -> None:
    for name in META:
        f = root / name
        f.write_text("".join(ln + "\n" for ln in f.read_text().splitlines()
                             if ln.split(",")[0] != image_id))


def test_eval_skips_a_label_out_of_range_naming_the_image(demo, tmp_path):
    root = _fixture(tmp_path, n=6)
    labels = (root / "class_labels.txt").read_text().splitlines()
    victim = labels[3].split(",")[0]
    labels[3] = f"{victim},99"
    (root / "class_labels.txt").write_text("\n".join(labels) + "\n")
    out = _eval(demo, root)
    assert out["failed"] == [[victim, "has label 99, not one of the network's 9 classes "
                                      "(0..8); check class_labels.txt"]]
    assert out["images"] == 5
    _without(root, victim)
    ref = _eval(demo, root)
    assert {k: out[k] for k in SCORES} == {k: ref[k] for k in SCORES}


def test_eval_skips_an_unreadable_mask_and_a_decompression_bomb(demo, tmp_path, monkeypatch):
    root = _fixture(tmp_path, n=6)
    rows = [ln.split(",") for ln in (root / "localization_masks.txt").read_text().splitlines()]
    (root / rows[1][1]).write_bytes(b"\x89PNG broken")
    Image.new("1", (400, 400)).save(root / rows[4][1])  # 160000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30000)  # images: 16384; bombs: > 60000
    out = _eval(demo, root)
    assert [f[0] for f in out["failed"]] == [rows[1][0], rows[4][0]]
    assert f"cannot read mask {root / rows[1][1]}" in out["failed"][0][1]
    assert "decompression bomb" in out["failed"][1][1]
    monkeypatch.undo()
    _without(root, rows[1][0])
    _without(root, rows[4][0])
    ref = _eval(demo, root)
    assert out["images"] == ref["images"] == 4
    assert {k: out[k] for k in SCORES} == {k: ref[k] for k in SCORES}


def test_eval_with_every_mask_empty_keeps_the_box_scores(demo, tmp_path):
    root = _fixture(tmp_path, n=6)
    full = _eval(demo, root)
    for line in (root / "localization_masks.txt").read_text().splitlines():
        Image.new("L", (128, 128)).save(root / line.split(",")[1])
    out = _eval(demo, root)
    assert out["PxAP"] is None
    assert out["PxAP_error"] == "no ground-truth foreground pixel was added: PxAP is undefined"
    for k in ("gt_known_loc", "MaxBoxAccV2", "MaxBoxAccV1", "pointing_game_box", "curves"):
        assert out[k] == full[k]
    assert out["pointing_game_mask"] is None


@pytest.mark.parametrize("damage", ["truncate", "drop_key", "garbage"])
def test_a_damaged_cache_entry_is_recomputed(tiny_net, damage):
    data = [(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)), i % 5)
            for i in range(8)]
    first = scan(tiny_net, data, progress=False)
    (entry,) = scan_cache_dir().glob("*.npz")
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "drop_key":  # a readable archive without the label sums (was a KeyError)
        with np.load(entry, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "label_sum"}
        with open(entry, "wb") as fh:
            np.savez(fh, **arrays)
    else:
        entry.write_bytes(b"\0" * 100)
    with pytest.warns(RuntimeWarning, match=f"damaged scan cache entry {entry}"):
        again = scan(tiny_net, data, progress=False)
    assert _arrays_equal(again, first)
    assert _arrays_equal(camviz.UnitStats.load(entry), first)  # replaced by a good one


# ------------------------------------------------------- item 14: an unwritable cache folder
def _unwritable_cache(tmp_path, monkeypatch) -> Path:
    """CAMVIZ_CACHE under a file: no folder can be made there (root writes into read-only
    folders, so a file in the way is what blocks for sure)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CAMVIZ_CACHE", str(blocker / "cache"))
    return blocker


def test_an_unwritable_scan_cache_warns_and_the_scan_goes_on(tiny_net, tmp_path, monkeypatch):
    data = [(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)), i % 5)
            for i in range(8)]
    fresh = scan(tiny_net, data, cache=False, progress=False)
    blocker = _unwritable_cache(tmp_path, monkeypatch)
    with pytest.warns(RuntimeWarning, match=r"cannot write the scan cache in .*a-file/cache/scans"
                      r" \(Not a directory\); going on without a cache"):
        got = scan(tiny_net, data, progress=False)
    assert _arrays_equal(got, fresh)
    assert blocker.read_text() == ""


def test_a_cache_write_that_fails_late_keeps_the_result(tiny_net, monkeypatch):
    """The folder was fine at the start, the write fails (a full disk): the statistics are
    returned and nothing is left in the cache folder."""
    data = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    fresh = scan(tiny_net, data, cache=False, progress=False)

    def full(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(camviz.UnitStats, "save", full)
    with pytest.warns(RuntimeWarning, match="No space left on device"):
        got = scan(tiny_net, data, progress=False)
    assert _arrays_equal(got, fresh)
    assert list(scan_cache_dir().iterdir()) == []


def test_an_unwritable_feature_cache_warns_and_the_fit_goes_on(tiny_net, tmp_path, monkeypatch):
    from camviz.heads import pool_features

    data = [(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)), i % 2)
            for i in range(6)]
    fresh = pool_features(tiny_net, data, cache=False, progress=False)
    _unwritable_cache(tmp_path, monkeypatch)
    with pytest.warns(RuntimeWarning, match="cannot write the feature cache in .*a-file"):
        got = pool_features(tiny_net, data, progress=False)
    assert torch.equal(got.features, fresh.features)
    assert got.labels.tolist() == [0, 1, 0, 1, 0, 1]


def test_the_cli_says_so_in_one_line_and_writes_its_output(tmp_path, monkeypatch, capsys):
    from camviz.cli import main

    _unwritable_cache(tmp_path, monkeypatch)
    out = tmp_path / "out" / "stats.npz"
    assert main(["scan", "--model", "demo", "--data", str(_fixture(tmp_path, 4)),
                 "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"camviz: warning: cannot write the scan cache in {tmp_path}/a-file/cache/"
                   "scans (Not a directory); going on without a cache (set CAMVIZ_CACHE to a "
                   "writable folder, or turn the cache off)"]
    assert camviz.UnitStats.load(out).num_images == 4


def test_a_new_transform_is_a_new_trunk_fingerprint(tiny_net):
    """The fingerprint is cached per GapNet: setting another preprocessing must not return
    the old one (statistics and pooled features of the old preprocessing would pass as fresh)."""
    from camviz.images import Preprocess

    old = trunk_fingerprint(tiny_net)
    keep = tiny_net.transform
    try:
        tiny_net.transform = Preprocess(resize=40, crop=32)
        assert trunk_fingerprint(tiny_net) != old
    finally:
        tiny_net.transform = keep
    assert trunk_fingerprint(tiny_net) == old


def test_statistics_of_two_networks_do_not_merge(tiny_net):
    data = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    a = scan(tiny_net, data[:2], cache=False, progress=False)
    torch.manual_seed(1)
    twin = camviz.GapNet(nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU()),
                         nn.Linear(12, 5), device="cpu", classes=tiny_net.classes)
    b = scan(twin, data[2:], cache=False, progress=False)
    with pytest.raises(CamvizError, match=r"cannot merge UnitStats of different networks \(units, "
                                          r"classes or trunk fingerprints [0-9a-f]+ / [0-9a-f]+"):
        a.merge(b)
    same = scan(tiny_net, data[2:], cache=False, progress=False)
    assert a.merge(same).num_images == 4


# ------------------------------------------------- items 5 and 10: tensor items, one bad image


def test_uint8_items_are_pixels_through_the_transform_in_scan_and_pool_features(tiny_net):
    from camviz.heads import pool_features

    rng = np.random.default_rng(3)
    arrays = [(rng.random((40, 48, 3)) * 255).astype(np.uint8) for _ in range(6)]
    pixels = [(torch.from_numpy(a).permute(2, 0, 1), i % 5) for i, a in enumerate(arrays)]
    floats = [(tiny_net.transform(a), i % 5) for i, a in enumerate(arrays)]  # resized, normalised
    a = scan(tiny_net, pixels, batch_size=4, cache=False, progress=False)
    b = scan(tiny_net, floats, batch_size=4, cache=False, progress=False)
    assert a.num_images == 6 and a.meta["failed"] == [] and a.input_size == (32, 32)
    assert _arrays_equal(a, b)
    pa = pool_features(tiny_net, pixels, cache=False, progress=False)
    pb = pool_features(tiny_net, floats, cache=False, progress=False)
    assert pa.failed == [] and torch.equal(pa.features, pb.features)


def test_bool_int64_complex_and_nan_items_are_reported_and_skipped(tiny_net):
    from camviz.heads import pool_features

    g = torch.Generator().manual_seed(0)
    nan = torch.rand(3, 32, 32, generator=g)
    nan[1, 2, 3] = float("nan")
    items = [(torch.rand(3, 32, 32, generator=g), i % 5) for i in range(7)]
    bad = {1: torch.ones(3, 32, 32, dtype=torch.bool), 2: torch.ones(3, 32, 32).long(),
           4: torch.ones(3, 32, 32, dtype=torch.complex64), 5: nan}
    for i, x in bad.items():
        items[i] = (x, 0)
    good = [i for i in range(7) if i not in bad]
    st = scan(tiny_net, items, batch_size=8, cache=False, progress=False)
    failed = {name: why for name, why in st.meta["failed"]}
    assert sorted(failed) == ["item 1", "item 2", "item 4", "item 5"]
    for i, dtype in ((1, "torch.bool"), (2, "torch.int64"), (4, "torch.complex64")):
        assert failed[f"item {i}"].startswith(f"a {dtype} tensor is not an image batch")
    assert "NaN or infinity" in failed["item 5"]
    ref = scan(tiny_net, [items[i] for i in good], batch_size=8, cache=False, progress=False)
    assert st.num_images == 3 and torch.equal(st.label_count, ref.label_count)
    p = pool_features(tiny_net, items, cache=False, progress=False)
    assert sorted(i for i, _ in p.failed) == ["item 1", "item 2", "item 4", "item 5"]
    p_ref = pool_features(tiny_net, [items[i] for i in good], cache=False, progress=False)
    assert torch.equal(p.features, p_ref.features) and p.labels.tolist() == [0, 3, 1]


def test_one_strip_too_long_to_resize_is_reported_and_the_rest_of_its_batch_kept(
        tiny_net, tmp_path):
    from camviz.heads import pool_features

    root = tmp_path / "strip"
    (root / "c").mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = [(rng.random((32, 32, 3)) * 255).astype(np.uint8) for _ in range(3)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(root / "c" / f"{i:02d}.png")
    strip = root / "c" / "strip.png"  # sorted last: the good images keep indices 0..2
    Image.new("RGB", (40000, 1)).save(strip)
    assert strip.stat().st_size < 300  # a small file, a huge resize
    tiny_net.transform = camviz.Preprocess(resize=32, crop=(32, 32))
    bound = "an image of 40000x1 pixels would be resized to 1280000x32, over 16777216 pixels"
    st = scan(tiny_net, ImageFolder(root), batch_size=4, cache=False, progress=False)
    assert st.num_images == 3 and len(st.meta["failed"]) == 1
    assert st.meta["failed"][0][0] == str(strip) and st.meta["failed"][0][1].startswith(bound)
    ref = scan(tiny_net, Subset(ImageFolder(root), [0, 1, 2]), cache=False, progress=False)
    assert torch.equal(st.top.indices, ref.top.indices) and _arrays_equal(st, ref)
    listed = scan(tiny_net, [*arrays, np.zeros((1, 40000, 3), np.uint8)], batch_size=4,
                  cache=False, progress=False)
    assert listed.num_images == 3 and [f[0] for f in listed.meta["failed"]] == ["item 3"]
    p = pool_features(tiny_net, ImageFolder(root), batch_size=4, cache=False, progress=False)
    assert p.features.shape[0] == 3 and len(p.failed) == 1
    assert p.failed[0][0] == str(strip) and p.failed[0][1].startswith(bound)


def test_an_unwritable_kernel_cache_warns_and_compiles_in_memory(tmp_path):
    import os
    import subprocess
    import sys

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["CAMVIZ_CACHE"] = str(blocker / "cache")
    code = ("import numpy as np; from camviz.metrics import BoxAccuracy; a = BoxAccuracy(); "
            "a.update(np.eye(8), np.array([[0, 0, 3, 3]])); print(a.compute()['MaxBoxAccV2'])")
    run = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "cannot write the compiled kernel (numba) cache in" in run.stderr
    assert float(run.stdout) >= 0 and blocker.read_text() == ""
