"""``camviz eval`` and camviz.evaluate.evaluate: scores, failures, specs, JSON; boxes in run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from camviz.cli import build_parser, main
from camviz.datasets import WsolDataset, WsolMetadata
from camviz.datasets import resolve_metadata as resolve_eval_data
from camviz.errors import DatasetError
from camviz.evaluate import eval_transform, evaluate, gt_maps
from camviz.metrics import BoxAccuracy, PixelAP


def _split(
    root: Path, n: int = 5, masks: bool = True, corrupt: bool = True, boxes: bool = True
) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    ids, labels, sizes, loc, mloc = [], [], [], [], []
    for i in range(n):
        name = f"images/{i}.png"
        w, h = 40 + 4 * i, 36
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(root / name)
        m = np.zeros((h, w), np.uint8)
        m[5:20, 8:30] = 255
        Image.fromarray(m).save(root / f"masks/{i}.png")
        ids.append(name)
        labels.append(f"{name},{i % 5}")
        sizes.append(f"{name},{w},{h}")
        loc.append(f"{name},8,5,29,19")
        mloc.append(f"{name},masks/{i}.png,")
    ids.append("images/missing.png")
    labels.append("images/missing.png,0")
    if corrupt:
        (root / "images/bad.png").write_bytes(b"not a png")
        ids.append("images/bad.png")
        labels.append("images/bad.png,1")
        loc.append("images/bad.png,0,0,3,3")
    (root / "image_ids.txt").write_text("\n".join(ids))
    (root / "class_labels.txt").write_text("\n".join(labels))
    (root / "image_sizes.txt").write_text("\n".join(sizes))
    if boxes:
        (root / "localization.txt").write_text("\n".join(loc))
    if masks:
        (root / "localization_masks.txt").write_text("\n".join(mloc))
    return root


def test_evaluate_reports_scores_missing_and_failed(tiny_net, tmp_path):
    meta = WsolMetadata(_split(tmp_path / "s"))
    out = evaluate(tiny_net, meta, batch_size=2, progress=False)
    assert out["images"] == 5
    assert out["missing"] == [["images/missing.png", "image file not found"]]
    assert [f[0] for f in out["failed"]] == ["images/bad.png"]
    for key in (
        "top1_cls",
        "top5_cls",
        "gt_known_loc",
        "top1_loc",
        "top5_loc",
        "MaxBoxAcc@30",
        "MaxBoxAcc@50",
        "MaxBoxAcc@70",
        "MaxBoxAccV2",
        "MaxBoxAccV1",
        "PxAP",
    ):
        assert 0.0 <= out[key] <= 100.0, key
    assert out["top5_cls"] == 100.0  # 5 classes
    assert out["top1_loc"] <= out["gt_known_loc"] and out["top1_loc"] <= out["top1_cls"]
    assert out["MaxBoxAccV2"] == pytest.approx(
        np.mean([out["MaxBoxAcc@30"], out["MaxBoxAcc@50"], out["MaxBoxAcc@70"]])
    )


def test_evaluate_equals_the_metrics_fed_by_hand(tiny_net, tmp_path):
    meta = WsolMetadata(_split(tmp_path / "s", corrupt=False))
    out = evaluate(tiny_net, meta, batch_size=3, progress=False)
    tf = eval_transform(tiny_net)
    ds = WsolDataset(meta, transform=tf, map_size=(32, 32))
    v2, px = BoxAccuracy(), PixelAP()
    for i in range(len(ds)):
        item = ds[i]
        res = tiny_net.run(item["image"][None])
        cam = gt_maps(res, torch.tensor([item["label"]]), (32, 32))[0].double().numpy()
        v2.update(cam, item["boxes"])
        px.update(cam, item["mask"], item["ignore"])
    ref = v2.compute()
    assert out["MaxBoxAccV2"] == ref["MaxBoxAccV2"]
    assert out["MaxBoxAcc@50"] == ref["MaxBoxAcc@50"]
    assert out["PxAP"] == pytest.approx(px.compute()["PxAP"], abs=1e-9)


def test_gt_maps_are_normalised_and_exact_in_shape(tiny_net):
    res = tiny_net.run(torch.rand(3, 3, 32, 32))
    maps = gt_maps(res, torch.tensor([0, 1, 4]), (32, 32))
    assert maps.shape == (3, 32, 32)
    assert torch.all(maps.amin((1, 2)) == 0) and torch.all(maps.amax((1, 2)) == 1)


def test_resolve_eval_data_specs(tmp_path):
    root = _split(tmp_path / "s", corrupt=False)
    meta_only = tmp_path / "meta"
    meta_only.mkdir()
    for f in ("image_ids.txt", "class_labels.txt", "localization.txt"):
        (meta_only / f).write_text((root / f).read_text())
    m = resolve_eval_data(f"{meta_only}:{root}")
    assert len(m) == 5 and m.image_root == root
    assert len(resolve_eval_data(str(root))) == 5
    with pytest.raises(DatasetError, match="METADATA_DIR"):
        resolve_eval_data(str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="demo:SPLIT"):
        resolve_eval_data("demo:")
    with pytest.raises(DatasetError, match="count"):
        resolve_eval_data("demo:test:many")


def test_cli_eval_json(tmp_path, capsys, monkeypatch, tiny_net):
    import camviz

    camviz.register_model("tiny", lambda weights, device: tiny_net, replace=True)
    root = _split(tmp_path / "s")
    assert build_parser().parse_args(["eval", "--data", str(root)]).command == "eval"
    code = main(["eval", "--model", "tiny", "--data", str(root), "--json", "--no-progress"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "tiny" and out["images"] == 5 and "curves" not in out
    main(["eval", "--model", "tiny", "--data", str(root), "--no-progress"])
    text = capsys.readouterr().out
    assert "MaxBoxAccV2" in text and "failed (left out): 1" in text and "missing" in text


def test_camviz_run_records_boxes(tiny_net, tmp_path):
    from camviz.runner import RESULTS, run_images

    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(img)
    run_images(tiny_net, [str(img)], tmp_path / "out", topk=3, progress=False)
    rec = json.loads((tmp_path / "out" / RESULTS).read_text().splitlines()[0])
    assert len(rec["boxes"]) == 3 and rec["image_size"] == [40, 40]
    assert rec["box_space"].startswith("photo pixels")
    for x0, y0, x1, y1 in rec["boxes"]:  # in the 40 x 40 photo's pixels, not the 32 x 32 input's
        assert 0 <= x0 <= x1 < 40 and 0 <= y0 <= y1 < 40


def test_masks_only_split_gives_pxap_and_classification(tiny_net, tmp_path):
    meta = WsolMetadata(_split(tmp_path / "s", boxes=False, corrupt=False))
    assert meta.has_masks and not meta.has_boxes
    out = evaluate(tiny_net, meta, progress=False)
    assert out["images"] == 5 and out["top5_cls"] == 100.0
    assert 0.0 <= out["PxAP"] <= 100.0 and "MaxBoxAccV2" not in out


def test_eval_reads_the_stored_frame_and_flags_sizes_that_disagree(tiny_net, tmp_path):
    """A photo with an EXIF rotation: boxes are in the stored frame (the reference ignores
    EXIF), and a size in image_sizes.txt that is not the file's is reported."""
    root = tmp_path / "s"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(3)
    img = Image.fromarray((rng.random((30, 50, 3)) * 255).astype(np.uint8))  # 50 wide, 30 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": an upright viewer shows it 30 wide, 50 high
    img.save(root / "images/a.jpg", exif=exif.tobytes())
    img.save(root / "images/b.jpg")
    (root / "image_ids.txt").write_text("images/a.jpg\nimages/b.jpg\n")
    (root / "class_labels.txt").write_text("images/a.jpg,0\nimages/b.jpg,1\n")
    (root / "image_sizes.txt").write_text("images/a.jpg,50,30\nimages/b.jpg,40,30\n")
    (root / "localization.txt").write_text("images/a.jpg,5,5,40,20\nimages/b.jpg,5,5,30,20\n")
    from camviz.images import load_image

    assert load_image(root / "images/a.jpg").size == (30, 50)  # upright for people
    ds = WsolDataset(WsolMetadata(root), transform=eval_transform(tiny_net))
    assert ds[0]["stored_size"] == (50, 30)  # the frame of the boxes
    out = evaluate(tiny_net, WsolMetadata(root), progress=False)
    assert out["images"] == 2
    assert out["size_mismatch"] == [["images/b.jpg", [40, 30], [50, 30]]]
