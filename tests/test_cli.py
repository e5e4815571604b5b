"""The camviz command: outputs, error records, resuming, and nothing written next to inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
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


def _records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _by_name(out, folder):
    return {Path(r["image"]).relative_to(folder).as_posix(): r for r in _records(out)}


def test_run_writes_overlays_records_and_skips_bad_files(folder, tmp_path, tiny_net) -> None:
    before = _snapshot(folder)
    out = tmp_path / "out"
    counts = runner.run_images(tiny_net, [folder], out, topk=3, progress=False)
    assert counts == {"done": 3, "skipped": 0, "failed": 1}
    by_name = _by_name(out, folder)
    assert set(by_name) == {"a.png", "sub/a.png", "gray.jpg", "fake.jpg"}
    assert by_name["fake.jpg"]["status"] == "error"
    assert "not a readable image" in by_name["fake.jpg"]["error"]
    ok = by_name["a.png"]
    res = tiny_net.run([folder / "a.png"])
    assert [t["class"] for t in ok["top"]] == res.logits[0].argsort(descending=True)[:3].tolist()
    probs = res.probs[0].sort(descending=True).values[:3]
    assert [t["prob"] for t in ok["top"]] == [round(float(p), 6) for p in probs]
    # two files with one name never share outputs
    assert by_name["a.png"]["key"] != by_name["sub/a.png"]["key"]
    for f in ok["overlays"] + [ok["panel"]]:
        assert Image.open(out / f).size[0] > 0
    assert _snapshot(folder) == before  # nothing written next to inputs
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))


def test_rerun_resumes_and_repairs_a_half_written_line(folder, tmp_path, tiny_net) -> None:
    out = tmp_path / "out"
    runner.run_images(tiny_net, [folder / "a.png"], out, progress=False)
    # a crash left half a line behind: it is cut, that image is redone, nothing is lost
    with (out / "results.jsonl").open("a") as f:
        f.write('{"key": "gray.jp')
    both = [folder / "a.png", folder / "gray.jpg"]
    counts = runner.run_images(tiny_net, both, out, progress=False)
    assert counts == {"done": 1, "skipped": 1, "failed": 0}
    assert [Path(r["image"]).name for r in _records(out)] == ["a.png", "gray.jpg"]
    # the same files given through their folder are the same inputs
    counts = runner.run_images(tiny_net, [folder], out, progress=False)
    assert counts == {"done": 1, "skipped": 2, "failed": 1}
    again = runner.run_images(tiny_net, [folder], out, progress=False)
    assert again == {"done": 0, "skipped": 4, "failed": 0}
    retry = runner.run_images(tiny_net, [folder], out, progress=False, retry_errors=True)
    assert retry == {"done": 0, "skipped": 3, "failed": 1}


def test_a_changed_or_new_file_of_the_same_name_is_not_skipped(folder, tmp_path, tiny_net,
                                                               rgb_image) -> None:
    out = tmp_path / "out"
    runner.run_images(tiny_net, [folder / "a.png"], out, progress=False)
    Image.fromarray(rgb_image[:, ::-1]).save(folder / "a.png")  # edited in place
    other = tmp_path / "other" / "a.png"  # a new image with an old one's name
    other.parent.mkdir()
    Image.fromarray(rgb_image[::2, ::2]).save(other)
    counts = runner.run_images(tiny_net, [folder / "a.png", other], out, progress=False)
    assert counts == {"done": 2, "skipped": 0, "failed": 0}
    recs = _records(out)
    assert len({r["key"] for r in recs}) == 2  # the edited file reused its folder, the new one not
    new = tiny_net.run([folder / "a.png"]).topk(1).indices[0, 0].item()
    last = [r for r in recs if r["image"] == str(folder / "a.png")][-1]
    assert last["top"][0]["class"] == new


def test_rerun_with_other_settings_is_refused_not_mixed(folder, tmp_path, tiny_net) -> None:
    out = tmp_path / "out"
    runner.run_images(tiny_net, [folder / "a.png"], out, topk=3, progress=False)
    before = (out / "results.jsonl").read_text()
    with pytest.raises(camviz.CamvizError, match="was made with other settings.*topk"):
        runner.run_images(tiny_net, [folder / "gray.jpg"], out, topk=2, progress=False)
    other = camviz.GapNet(tiny_net.model.features, torch.nn.Linear(12, 5), device="cpu",
                          transform=tiny_net.transform)
    with pytest.raises(camviz.CamvizError, match="model_fingerprint"):
        runner.run_images(other, [folder / "gray.jpg"], out, topk=3, progress=False)
    assert (out / "results.jsonl").read_text() == before


def test_output_inside_the_input_is_not_read_back(folder, tiny_net) -> None:
    out = folder / "maps"
    first = runner.run_images(tiny_net, [folder], out, progress=False)
    again = runner.run_images(tiny_net, [folder], out, progress=False)
    assert first == {"done": 3, "skipped": 0, "failed": 1}
    assert again == {"done": 0, "skipped": 4, "failed": 0}


def test_leftover_temporary_files_go_and_outputs_get_normal_permissions(folder, tmp_path,
                                                                        tiny_net) -> None:
    import os

    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".camviz-tmp-999999999-abcd-panel.png"
    stale.write_bytes(b"half")
    old = os.umask(0o022)
    try:
        runner.run_images(tiny_net, [folder / "a.png"], out, progress=False)
    finally:
        os.umask(old)
    assert not stale.exists() and not list(out.rglob(".camviz-tmp-*"))
    modes = {oct(p.stat().st_mode & 0o777) for p in out.rglob("*.png")}
    assert modes == {"0o644"}


def test_bad_output_folders_and_options_fail_early_in_one_line(folder, tmp_path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    base = ["run", str(folder / "a.png"), "--model", "demo", "--weights", "none", "--no-progress"]
    assert main([*base, "--device", "cpu", "--out", str(afile)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"camviz: error: --out {afile} is a file; give a folder (it is created if "
                   "missing)")
    assert main([*base, "--device", "cpu", "--out", str(afile / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("camviz: error: cannot create the output folder") and "\n" not in err
    for bad in (["--topk", "0"], ["--batch-size", "-1"]):
        with pytest.raises(SystemExit) as exc:
            main([*base, "--out", str(tmp_path / "o"), *bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "must be at least 1" in err and len(err.splitlines()) == 1
    assert main([*base, "--device", "tpu", "--out", str(tmp_path / "o")]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


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


def test_import_camviz_and_the_scan_and_eval_commands_stay_light():
    import subprocess
    import sys

    heavy = ("ipywidgets", "plotly", "numba", "matplotlib", "camviz.demo.train", "camviz.widgets")
    code = (
        "import sys, camviz, camviz.cli, camviz.cli.evaluate, camviz.cli.units\n"
        "camviz.cli.build_parser()\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def _demo_run(inputs, out, *extra):
    return main(["run", *map(str, inputs), "--model", "demo", "--device", "cpu", "--topk", "2",
                 "--no-progress", "--out", str(out), *extra])


def _files_in(folder):
    return sorted(p.relative_to(folder.parent).as_posix() for p in folder.rglob("*")
                  if p.is_file())


def test_an_edited_input_leaves_only_its_new_record_and_files(tmp_path) -> None:
    import os
    import shutil

    from camviz.demo import write_demo_images

    house, tree = write_demo_images(tmp_path / "world", n=2)  # the demo net tells them apart
    src, out = tmp_path / "in" / "x.png", tmp_path / "out"
    src.parent.mkdir()
    shutil.copy(house, src)
    assert _demo_run([src], out) == 0
    (old,) = _records(out)
    shutil.copy(tree, src)  # edited in place
    os.utime(src, ns=(old["source"]["mtime_ns"] + 10**9,) * 2)
    assert _demo_run([src], out) == 0
    (new,) = _records(out)  # one record per image, the new one
    assert new["source"]["size"] == src.stat().st_size
    assert [t["name"] for t in new["top"]] != [t["name"] for t in old["top"]]
    assert old["key"] == new["key"]
    gone = set(old["overlays"]) - set(new["overlays"])
    assert gone  # the old top-k wrote files the new one does not
    assert _files_in(out / new["key"]) == sorted([*new["overlays"], new["panel"]])


def test_a_run_killed_before_cleaning_up_a_superseded_record_finishes_it(tmp_path) -> None:
    from camviz.demo import write_demo_images

    (src,) = write_demo_images(tmp_path / "in", n=1)
    out = tmp_path / "out"
    assert _demo_run([src], out) == 0
    (rec,) = _records(out)
    # what a kill between appending the new record and removing the old one's files leaves
    stale = {**rec, "source": {**rec["source"], "size": 1}, "overlays": [
        rec["overlays"][0], f"{rec['key']}/top2_3_d.png", "../outside.png", "results.jsonl"]}
    (out / rec["key"] / "top2_3_d.png").write_bytes(b"old")
    (tmp_path / "outside.png").write_bytes(b"not camviz's")
    log = out / "results.jsonl"
    log.write_text(json.dumps(stale) + "\n" + log.read_text())
    assert _demo_run([src], out) == 0
    assert _records(out) == [rec]
    assert _files_in(out / rec["key"]) == sorted([*rec["overlays"], rec["panel"]])
    assert (tmp_path / "outside.png").read_bytes() == b"not camviz's"  # only OUT's own files


def test_an_input_inside_the_output_folder_is_refused_before_any_work(tmp_path, capsys) -> None:
    from camviz.demo import write_demo_images

    out = tmp_path / "out"
    (src,) = write_demo_images(out / "in", n=1)
    for given in (out / "in", src, out):
        assert _demo_run([given], out) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"camviz: error: the input {given} is inside the output folder {out}; "
                       "give another --out")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["in",
                                                                              f"in/{src.name}"]


def test_a_line_that_is_not_utf8_counts_as_damaged_and_its_image_is_redone(tmp_path,
                                                                          capsys) -> None:
    from camviz.demo import write_demo_images

    paths = write_demo_images(tmp_path / "in", n=2)
    out = tmp_path / "out"
    assert _demo_run(paths, out) == 0
    first, second = (out / "results.jsonl").read_bytes().splitlines(keepends=True)
    (out / "results.jsonl").write_bytes(first[:20] + b"\xff\xfe" + first[22:] + second)
    capsys.readouterr()
    assert _demo_run(paths, out) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("1 done, 1 skipped")
    assert "dropped 1 damaged line(s); their images are redone" in captured.err
    recs = _records(out)  # readable again: every line UTF-8 JSON, one record per image
    assert sorted(r["image"] for r in recs) == sorted(map(str, paths))


# ------------------------------------------------------- output locations and counts, checked first

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "demo-fixture"
_DEMO = ["--model", "demo", "--weights", "none", "--device", "cpu", "--no-progress"]
# each command with the out path it gets; True where --out is a file, False where a folder
_COMMANDS = {
    "scan": (lambda o: ["scan", *_DEMO, "--data", "demo:test:8", "--out", o], True),
    "dissect": (lambda o: ["dissect", *_DEMO, "--data", "demo:test:8", "--out", o], False),
    "fit-head": (lambda o: ["fit-head", *_DEMO, "--data", "demo-novel:train:8", "--out", o],
                 True),
    "figure": (lambda o: ["figure", "top-classes", "a.png", "--model", "demo", "--weights",
                          "none", "--device", "cpu", "--out", o], True),
    "figure-curves": (lambda o: ["figure", "curves", "--model", "demo", "--model", "demo-gmp",
                                 "--device", "cpu", "--data", "demo:test:8", "--out", o], True),
    "fine-tune": (lambda o: ["fine-tune", "--model", "demo-fc", "--to-gap", "--weights", "none",
                             "--data", "demo:train:8", "--device", "cpu", "--out", o], True),
}


@pytest.fixture
def no_network(monkeypatch):
    """Any network loaded (or data read for fine-tuning) fails the test."""
    def ran(*args, **kwargs):
        raise AssertionError("a network was loaded before the output was checked")

    from camviz.cli import common, figure, finetune
    for mod, name in [(common, "load_model"), (figure, "load_model"),
                      (finetune, "load_source"), (finetune, "read_converted")]:
        monkeypatch.setattr(mod, name, ran)


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("camviz: error: "), captured.err
    assert "Traceback" not in captured.err and not captured.out
    return lines[0]


@pytest.mark.parametrize("command", sorted(_COMMANDS))
def test_bad_out_of_every_command_fails_before_any_work(command, tmp_path, capsys,
                                                        no_network) -> None:
    build, is_file = _COMMANDS[command]
    afile, adir = tmp_path / "afile", tmp_path / "adir.png"
    afile.write_text("x")
    adir.mkdir()
    bad = {afile / "x.png": "is under the file"}
    bad.update({adir: "is a folder; give the path of the file to write"} if is_file else
               {afile: "is a file; give a folder"})
    before = _snapshot(tmp_path)
    for out, why in bad.items():
        assert main(build(str(out))) == 2
        line = _one_error_line(capsys)
        assert f"--out {out} {why}" in line
    assert _snapshot(tmp_path) == before  # nothing written, not even an empty folder


def test_bad_checkpoints_fail_before_any_work(tmp_path, capsys, no_network) -> None:
    afile, adir = tmp_path / "afile", tmp_path / "adir"
    afile.write_text("x")
    adir.mkdir()
    before = _snapshot(tmp_path)
    out = str(tmp_path / "o.npz")
    cases = [
        (["scan", *_DEMO, "--data", "demo:test:8", "--out", out, "--checkpoint", str(afile)],
         f"--checkpoint {afile} is a file"),
        (["dissect", *_DEMO, "--data", "demo:test:8", "--out", str(adir), "--checkpoint",
          str(afile / "c")], f"--checkpoint {afile / 'c'} is under the file {afile}"),
        (["eval", *_DEMO, "--data", "demo:test:8", "--checkpoint", str(afile)],
         f"--checkpoint {afile} is a file"),
        (["eval", *_DEMO, "--data", "demo:test:8", "--checkpoint", str(afile / "c")],
         f"--checkpoint {afile / 'c'} is under the file {afile}"),
        (_COMMANDS["fine-tune"][0](out) + ["--checkpoint", str(adir)],
         f"--checkpoint {adir} is a folder"),
    ]
    # the default scan checkpoint (OUT.partial) is checked as well
    (tmp_path / "s.npz.partial").write_text("x")
    before = _snapshot(tmp_path)
    cases.append((_COMMANDS["scan"][0](str(tmp_path / "s.npz")), "s.npz.partial is a file"))
    for argv, want in cases:
        assert main(argv) == 2, argv
        assert want in _one_error_line(capsys)
    assert _snapshot(tmp_path) == before


def test_out_in_a_folder_that_takes_no_files_fails_first(tmp_path, monkeypatch, capsys,
                                                         no_network) -> None:
    from camviz.cli import common

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(common.tempfile, "TemporaryFile", refuse)  # a read-only folder (as root)
    assert main(_COMMANDS["scan"][0](str(tmp_path / "new" / "s.npz"))) == 2
    line = _one_error_line(capsys)
    assert f"the folder {tmp_path} does not take new files (Permission denied)" in line
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("argv", [
    ["dissect", "--data", "demo:test:8", "--out", "d", "--top-k", "0"],
    ["dissect", "--data", "demo:test:8", "--out", "d", "--top-k", "-1"],
    ["dissect", "--data", "demo:test:8", "--out", "d", "--mask-size", "0"],
    ["scan", "--data", "demo:test:8", "--out", "s.npz", "--workers", "-1"],
    ["fine-tune", "--model", "demo-fc", "--to-gap", "--data", "demo:train:8", "--out", "m",
     "--width", "0"],
    ["eval", "--data", "demo:test:8", "--limit", "0"],
    ["eval", "--data", "demo:test:8", "--limit", "-1"],
    ["fit-head", "--data", "demo-novel:train:8", "--out", "h", "--workers", "-2"],
    ["figure", "top-classes", "a.png", "--out", "f.png", "--k", "0"],
])
def test_counts_below_their_least_fail_in_one_line(argv, tmp_path, monkeypatch, capsys,
                                                   no_network) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "must be at least" in _one_error_line(capsys)
    assert not list(tmp_path.iterdir())


def test_fine_tune_checks_the_device_before_reading_data(tmp_path, capsys, no_network) -> None:
    argv = _COMMANDS["fine-tune"][0](str(tmp_path / "m.safetensors"))
    assert main([*argv, "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in _one_error_line(capsys)


def _stale(folder: Path, name: str) -> Path:
    f = folder / f"{camviz.files.TMP_PREFIX}999999999-abcd1234-{name}"
    f.write_bytes(b"left by a killed run")
    return f


_RUNS = {
    "s.npz": ["scan", *_DEMO, "--data", "demo:test:8", "--no-cache"],
    "h.safetensors": ["fit-head", *_DEMO, "--data", "demo-novel:train:8", "--no-cache"],
    "f.png": ["figure", "top-classes", str(FIXTURE / "images" / "000000.png"), "--model", "demo",
              "--weights", "none", "--device", "cpu", "--dpi", "30"],
    "m.safetensors": ["fine-tune", "--model", "demo-fc", "--to-gap", "--weights", "none",
                      "--width", "8", "--data", str(FIXTURE), "--epochs", "1", "--batch-size",
                      "8", "--steps-per-epoch", "1", "--device", "cpu", "--no-progress"],
}


@pytest.mark.parametrize("name", sorted(_RUNS))
def test_a_run_removes_what_a_killed_run_left_beside_its_output(name, tmp_path,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv("CAMVIZ_CACHE", str(tmp_path / "cache"))
    stale, other = _stale(tmp_path, name), _stale(tmp_path, "other.npz")
    assert main([*_RUNS[name], "--out", str(tmp_path / name)]) == 0
    assert not stale.exists() and (tmp_path / name).is_file()
    assert other.exists()  # another output's (its own run removes it)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(camviz.files.TMP_PREFIX)
                and p != other]


def test_dissect_removes_what_a_killed_run_left_in_its_folder(tmp_path) -> None:
    stale = _stale(tmp_path, "dissection.json")
    argv = ["dissect", *_DEMO, "--data", "demo:test:8", "--no-cache", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert not stale.exists() and (tmp_path / "dissection.json").is_file()
