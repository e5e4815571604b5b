"""The whole-photo view on a small network: placements, maps on the photo's pixels, camviz run
grouping photos by size, boxes in photo pixels, a strip refused and reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import camviz
from camviz.errors import ImageError
from camviz.images import Preprocess
from camviz.runner import photo_overlay, run_images


@pytest.fixture
def net() -> camviz.GapNet:
    torch.manual_seed(0)
    feats = nn.Sequential(nn.Conv2d(3, 6, 3, stride=4, padding=1), nn.ReLU())
    return camviz.GapNet(feats, nn.Linear(6, 4), classes=list("abcd"), device="cpu",
                         transform=Preprocess(resize=40, crop=32))


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_whole_and_crop_placements(net):
    whole = net.run([_photo(60, 90, 0)], view="whole")
    assert tuple(whole.inputs.shape[-2:]) == (40, 60)  # shorter side 40, as the transform
    assert whole.placements[0].region == (0, 0, 90, 60)
    assert whole.photo_maps(0, [1, 3]).shape == (2, 60, 90)
    assert whole.photo_maps(0, [1], max_side=45).shape == (1, 30, 45)
    crop = net.run([_photo(60, 90, 0)])  # resize to 40 x 60, crop 32 at top 4, left 14
    assert tuple(crop.inputs.shape[-2:]) == (32, 32)
    assert crop.placements[0].region == (21, 6, 69, 54)  # x 1.5 back to the photo
    assert crop.photo_maps(0).shape == (1, 48, 48)
    with pytest.raises(camviz.CamvizError, match="view must be one of"):
        net.run([_photo(60, 90, 0)], view="full")


def test_a_normalised_tensor_has_no_photo(net):
    res = net.run(torch.rand(1, 3, 32, 32))
    assert res.placements is None
    with pytest.raises(camviz.CamvizError, match="has no photos"):
        res.photo_maps(0)


def test_select_keeps_placements(net):
    res = net.run([_photo(60, 90, 0), _photo(60, 90, 1), _photo(60, 90, 2)], view="whole")
    assert len(res.select([2, 0]).placements) == 2 and len(res.select(1).placements) == 1


def test_photo_overlay_greys_what_the_crop_left_out():
    photo = np.full((4, 6, 3), 200, np.uint8)
    out = photo_overlay(photo, np.zeros((2, 2)), (2, 1, 4, 3), alpha=0.0)
    assert out[1, 2].tolist() == [200, 200, 200]  # inside: the photo (alpha 0)
    assert out[0, 0].tolist() == [164, 164, 164]  # outside: 200 * 0.5 + 64


def test_run_groups_photos_by_size_and_reports_a_strip(net, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, (h, w), seed in (("a", (60, 90), 0), ("b", (50, 50), 1), ("c", (60, 90), 2),
                               ("strip", (8, 400), 3)):
        Image.fromarray(_photo(h, w, seed)).save(folder / f"{name}.png")
    counts = run_images(net, [folder], tmp_path / "out", topk=2, progress=False)
    assert counts == {"done": 3, "skipped": 0, "failed": 1}
    recs = {Path(r["image"]).name: r for r in map(
        json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    assert "over 5 times longer than wide" in recs["strip.png"]["error"]
    for key, (h, w) in (("a.png", (60, 90)), ("b.png", (50, 50)), ("c.png", (60, 90))):
        rec = recs[key]
        assert rec["image_size"] == [h, w] and rec["region"] == [0, 0, w, h]
        assert Image.open(tmp_path / "out" / rec["overlays"][0]).size == (w, h)
        for x0, y0, x1, y1 in rec["boxes"]:
            assert 0 <= x0 <= x1 < w and 0 <= y0 <= y1 < h
    # one photo run alone gives the same classes as in its group of two
    alone = net.run([np.asarray(Image.open(folder / "c.png"))], view="whole").topk(2)
    assert [t["class"] for t in recs["c.png"]["top"]] == alone.indices[0].tolist()


def test_different_sizes_cannot_share_a_whole_view_batch(net):
    with pytest.raises(ImageError, match="run them one by one"):
        net.run([_photo(60, 90, 0), _photo(50, 50, 1)], view="whole")
