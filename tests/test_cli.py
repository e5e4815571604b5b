"""The camviz command: outputs, error records, resuming, and nothing written next to inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import camviz
from camviz import runner
from camviz.cli import main


@pytest.fixture
def folder(tmp_path, rgb_image):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(rgb_image).save(src / "a.png")
    Image.fromarray(rgb_image[::-1]).save(src / "sub" / "a.png")  # same name, other folder
    Image.fromarray(rgb_image[..., 0]).save(src / "gray.jpg")
    (src / "fake.jpg").write_text("not an image")
    return src


def _snapshot(path):
    return sorted((p.relative_to(path), p.stat().st_mtime_ns) for p in path.rglob("*"))


def test_run_writes_overlays_records_and_skips_bad_files(folder, tmp_path, tiny_net) -> None:
    before = _snapshot(folder)
    out = tmp_path / "out"
    counts = runner.run_images(tiny_net, [folder], out, topk=3, progress=False)
    assert counts == {"done": 3, "skipped": 0, "failed": 1}
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_key = {r["key"]: r for r in recs}
    assert set(by_key) == {"a.png", "sub__a.png", "gray.jpg", "fake.jpg"}
    assert by_key["fake.jpg"]["status"] == "error"
    assert "not a readable image" in by_key["fake.jpg"]["error"]
    ok = by_key["a.png"]
    assert [t["class"] for t in ok["top"]] == sorted(
        range(5), key=lambda c: -tiny_net.run([folder / "a.png"]).logits[0, c].item()
    )[:3]
    probs = tiny_net.run([folder / "a.png"]).probs[0].sort(descending=True).values[:3]
    assert [t["prob"] for t in ok["top"]] == [round(float(p), 6) for p in probs]
    for f in ok["overlays"] + [ok["panel"]]:
        assert Image.open(out / f).size[0] > 0
    assert _snapshot(folder) == before  # nothing written next to inputs
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))


def test_rerun_resumes(folder, tmp_path, tiny_net) -> None:
    out = tmp_path / "out"
    runner.run_images(tiny_net, [folder / "a.png"], out, progress=False)
    # a crash left half a line behind: that image is redone, finished ones are not
    with (out / "results.jsonl").open("a") as f:
        f.write('{"key": "gray.jp')
    both = [folder / "a.png", folder / "gray.jpg"]
    counts = runner.run_images(tiny_net, both, out, progress=False)
    assert counts == {"done": 1, "skipped": 1, "failed": 0}
    counts = runner.run_images(tiny_net, [folder], out, progress=False)
    assert counts["skipped"] == 1 + 0 and counts["done"] == 2  # keys are relative to the folder now
    again = runner.run_images(tiny_net, [folder], out, progress=False)
    assert again == {"done": 0, "skipped": 4, "failed": 0}
    retry = runner.run_images(tiny_net, [folder], out, progress=False, retry_errors=True)
    assert retry == {"done": 0, "skipped": 3, "failed": 1}


def test_image_keys_are_unique_and_safe(tmp_path) -> None:
    keys = runner.image_keys(
        [tmp_path / "x" / "a b.png", tmp_path / "y" / "..png", tmp_path / "x" / "c.png"]
    )
    assert keys == ["x__a_b.png", "y__png", "x__c.png"]
    assert all("/" not in k and ".." not in k for k in keys)


def test_main_reports_errors_in_one_line(tmp_path, capsys) -> None:
    code = main(
        ["run", str(tmp_path / "missing.png"), "--model", "nope-net", "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert capsys.readouterr().err.startswith("camviz: error: unknown model 'nope-net'")
    code = main(
        [
            "run",
            str(tmp_path),
            "--model",
            "resnet18",
            "--weights",
            "none",
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cpu",
        ]
    )
    assert code == 2
    assert "no images in folder" in capsys.readouterr().err


def test_cli_with_a_torchvision_model(tmp_path, rgb_image) -> None:
    Image.fromarray(np.asarray(Image.fromarray(rgb_image).resize((260, 240)))).save(
        tmp_path / "i.png"
    )
    code = main(
        [
            "run",
            str(tmp_path / "i.png"),
            "--model",
            "resnet18",
            "--weights",
            "none",
            "--topk",
            "2",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    rec = json.loads((tmp_path / "o" / "results.jsonl").read_text())
    # the whole view (default): the shorter side resized to 256 as the weights do, no crop
    assert rec["view"] == "whole" and rec["input_size"] == [256, 277] and len(rec["top"]) == 2
    assert rec["image_size"] == [240, 260] and rec["region"] == [0, 0, 260, 240]
    assert Image.open(tmp_path / "o" / rec["overlays"][0]).size == (260, 240)
    net = camviz.load_model("resnet18", weights=None, device="cpu")
    assert rec["top"][0]["name"] in net.classes
    main(["run", str(tmp_path / "i.png"), "--model", "resnet18", "--weights", "none",
          "--topk", "2", "--out", str(tmp_path / "c"), "--no-progress", "--device", "cpu",
          "--view", "crop"])
    crop = json.loads((tmp_path / "c" / "results.jsonl").read_text())
    # resized to 256 x 277, centre crop 224 at top 16, left round(26.5) = 26; back in the
    # 240 x 260 photo's pixels (x 240/256, x 260/277): left 24.4, top 15, right 234.6, bottom 225
    assert crop["view"] == "crop" and crop["input_size"] == [224, 224]
    assert crop["region"] == [24, 15, 235, 225]
    for x0, y0, x1, y1 in crop["boxes"]:
        assert 24 <= x0 <= x1 < 235 and 15 <= y0 <= y1 < 225
