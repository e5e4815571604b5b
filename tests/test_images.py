"""Awkward inputs: grayscale, RGBA, 16-bit, tiny, missing, empty folders, fake JPEGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import camviz
from camviz.images import Preprocess, list_images, load_image, to_rgb


def test_grayscale_and_rgba_become_rgb(tmp_path, tiny_net) -> None:
    Image.new("L", (40, 30), 77).save(tmp_path / "g.png")
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red
    rgba.save(tmp_path / "a.png")
    g, a = load_image(tmp_path / "g.png"), load_image(tmp_path / "a.png")
    assert g.mode == a.mode == "RGB"
    assert g.getpixel((0, 0)) == (77, 77, 77)
    assert a.getpixel((0, 0)) == (255, 255, 255)  # composited on white, not red
    res = tiny_net.run([tmp_path / "g.png", tmp_path / "a.png"])
    assert res.logits.shape == (2, 5)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path) -> None:
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    img = load_image(tmp_path / "deep.png")
    assert [img.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_palette_with_transparency() -> None:
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 255] * 256)
    p.info["transparency"] = 0
    assert to_rgb(p).getpixel((0, 0)) == (255, 255, 255)


def test_missing_file_and_not_a_file(tmp_path) -> None:
    with pytest.raises(camviz.ImageError, match="image file not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(camviz.ImageError, match="not a file"):
        load_image(tmp_path)


def test_text_file_named_jpg(tmp_path) -> None:
    (tmp_path / "fake.jpg").write_text("hello, I am not a JPEG")
    with pytest.raises(camviz.ImageError, match="not a readable image"):
        load_image(tmp_path / "fake.jpg")


def test_truncated_png(tmp_path, rgb_image) -> None:
    Image.fromarray(rgb_image).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(camviz.ImageError, match="corrupt or truncated"):
        load_image(tmp_path / "t.png")


def test_empty_folder(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(camviz.ImageError, match="no images in folder"):
        list_images([tmp_path / "empty"])


def test_image_smaller_than_the_stride(tmp_path) -> None:
    import torchvision

    net = camviz.GapNet.from_model(
        torchvision.models.resnet18(num_classes=3), device="cpu", probe_size=64
    )
    with pytest.raises(camviz.ImageError, match=r"smaller than the network's stride \(32 pixels\)"):
        net.run(torch.rand(1, 3, 3, 3))
    # with a resizing transform, the same tiny image is fine
    Image.new("RGB", (3, 3), (9, 9, 9)).save(tmp_path / "tiny.png")
    net.transform = Preprocess(resize=64, crop=64)
    assert net.run([tmp_path / "tiny.png"]).logits.shape == (1, 3)


def test_preprocess_matches_torchvision_preset(rgb_image) -> None:
    from torchvision.models import ResNet18_Weights

    preset = ResNet18_Weights.DEFAULT.transforms()
    prep = Preprocess.from_torchvision(preset)
    big = np.asarray(Image.fromarray(rgb_image).resize((300, 260)))
    ours, theirs = prep(big), preset(Image.fromarray(big))
    assert ours.shape == theirs.shape == (3, 224, 224)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0.05)


def test_arrays_of_many_kinds(tiny_net) -> None:
    f = np.random.default_rng(0).random((20, 20, 3))
    u16 = (f * 65535).astype(np.uint16)
    gray = (f[..., 0] * 255).astype(np.uint8)
    res = tiny_net.run([f, u16, gray])
    assert res.logits.shape == (3, 5)
    with pytest.raises(camviz.ImageError, match=r"must lie in \[0, 1\]"):
        tiny_net.run([f * 3])
    with pytest.raises(camviz.ImageError, match="different sizes"):
        camviz.GapNet(tiny_net.model.features, tiny_net.model.head, device="cpu").run(
            [np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)]
        )
