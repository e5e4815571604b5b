"""The ``camviz run`` job: class maps of image files written into an output folder.

For each image: overlays of its top-k class maps (PNG, plus one panel) and one JSON Lines record
in ``OUT/results.jsonl``. A bad file is recorded as an error and skipped; a rerun skips finished
images; nothing is written outside ``OUT``; every file is written atomically.

Example:
    >>> image_key(Path("a/cat.jpg")) != image_key(Path("b/cat.jpg"))
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from camviz.errors import CamvizError, ImageError
from camviz.files import remove_stale_temps, save_image, write_text
from camviz.gapnet import GapNet
from camviz.images import list_images, load_image
from camviz.localize import paper_boxes
from camviz.render import grid, overlay
from camviz.result import CamResult
from camviz.scan import model_fingerprint

__all__ = ["RESULTS", "MANIFEST", "RunLog", "bind_folder", "image_key", "list_inputs",
           "prepare_out", "run_config", "run_demo", "run_images", "safe_name", "source_id"]

RESULTS = "results.jsonl"
#: The settings an output folder is bound to.
MANIFEST = "camviz-run.json"
RUN_FORMAT = "camviz.run/2"


def safe_name(text: str, limit: int = 60) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``._-``), at most ``limit`` long.

    Example:
        >>> safe_name("tiger cat / Egyptian cat")
        'tiger_cat_Egyptian_cat'
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return (name or "x")[:limit]


def image_key(path: Path) -> str:
    """The output folder name of an input image: its file name made safe, plus a short hash of
    its resolved path, so that two different files never share outputs (same name in two
    folders, or across runs).

    Example:
        >>> image_key(Path("/photos/a b.jpg"))[:8]
        'a_b.jpg-'
    """
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:8]
    return f"{safe_name(Path(path).name, 60)}-{digest}"


def source_id(path: Path) -> dict[str, Any]:
    """What identifies an input file's content cheaply: resolved path, size and mtime.

    Example:
        >>> sorted(source_id(Path(__file__)))
        ['mtime_ns', 'path', 'size']
    """
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def run_config(net: GapNet, **options: Any) -> dict[str, Any]:
    """What made a run's records: the model (architecture, weights, classes, preprocessing,
    as a fingerprint) and the options that change the outputs.

    Example:
        >>> from torch import nn
        >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 2), device="cpu")
        >>> sorted(run_config(net, topk=5))
        ['format', 'model', 'model_fingerprint', 'options']
    """
    return {"format": RUN_FORMAT, "model": repr(net), "model_fingerprint": model_fingerprint(net),
            "options": options}


def bind_folder(out: Path, config: dict[str, Any]) -> None:
    """Tie the output folder to one run configuration (``OUT/camviz-run.json``): a rerun with
    the same model and options resumes; another one is refused, never mixed in.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> bind_folder(d, {"model": "a", "options": {"topk": 5}})
        >>> bind_folder(d, {"model": "a", "options": {"topk": 3}})
        Traceback (most recent call last):
        ...
        camviz.errors.CamvizError: ... was made with other settings (options: {'topk': 5} here, ...
    """
    manifest = out / MANIFEST
    if not manifest.is_file():
        write_text(manifest, json.dumps(config, indent=1) + "\n")
        return
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CamvizError(f"{manifest} is damaged ({err}); remove it to start the folder "
                          "over, or give another --out") from err
    diff = [f"{k}: {old.get(k)!r} here, {config.get(k)!r} now" for k in sorted(config)
            if k != "model" and old.get(k) != config.get(k)]
    if diff:
        raise CamvizError(f"{out} was made with other settings ({'; '.join(diff)}); give "
                          "another --out, or remove that folder to start over")


def prepare_out(out: str | os.PathLike[str]) -> Path:
    """Check that ``out`` can be the output folder (a folder, or creatable, and writable) and
    create it; remove temporary files a killed run left in it.

    Example:
        >>> import tempfile
        >>> prepare_out(tempfile.mkstemp()[1])
        Traceback (most recent call last):
        ...
        camviz.errors.CamvizError: --out ... is a file; give a folder (it is created if missing)
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise CamvizError(f"--out {path} is a file; give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CamvizError(f"cannot create the output folder {path} ({err.strerror}); give "
                          "another --out") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise CamvizError(f"the output folder {path} is not writable; give another --out")
    remove_stale_temps(path)
    return path


class RunLog:
    """``OUT/results.jsonl``: one JSON record per image, appended as images finish.

    A line cut short by a crash is removed before appending (its image is redone); the record
    of an input counts as done only while the file is unchanged (same path, size and mtime);
    the last record of a path wins.

    Example:
        >>> import tempfile
        >>> log = RunLog(Path(tempfile.mkdtemp()) / RESULTS)
        >>> log.done({"path": "/a.png", "size": 1, "mtime_ns": 2}, retry_errors=False)
        False
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last: dict[str, dict[str, Any]] = {}
        if path.is_file():
            self._repair()
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.last[rec["source"]["path"]] = rec
                except (ValueError, KeyError, TypeError):
                    continue  # a record of an older format or a damaged line: that image is redone

    def _repair(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data[: data.rfind(b"\n") + 1]
            with open(self.path, "r+b") as fh:
                fh.truncate(len(keep))

    def done(self, source: dict[str, Any], retry_errors: bool) -> bool:
        """Whether ``source`` (see :func:`source_id`) has a record that still stands."""
        rec = self.last.get(source["path"])
        if rec is None or rec.get("source") != source:
            return False
        return rec.get("status") == "ok" or (rec.get("status") == "error" and not retry_errors)

    def append(self, rec: dict[str, Any]) -> None:
        """Add one record (one line, flushed and synced)."""
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.last[rec["source"]["path"]] = rec


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def list_inputs(inputs: Sequence[str | os.PathLike[str]], out: Path) -> list[Path]:
    """The image files of ``inputs`` (files and folders), leaving out everything under the
    output folder ``out`` (so an ``--out`` inside an input folder never feeds a rerun).

    Example:
        >>> list_inputs([], Path("out"))
        []
    """
    skip = out.resolve()
    return [p for p in list_images(inputs)
            if not p.resolve().is_relative_to(skip)]


def run_images(
    net: GapNet,
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    topk: int = 5,
    batch_size: int = 16,
    alpha: float = 0.5,
    cmap: str = "jet",
    retry_errors: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """The ``camviz run`` job as a function; returns counts of done, skipped and failed images.

    Every record is keyed by what made it (the input's path, size and mtime; the model and the
    options, bound to the folder); a rerun skips what still stands and redoes changed files.

    Example:
        >>> run_images(net, ["photos/"], "out/photos")  # doctest: +SKIP
        {'done': 12, 'skipped': 0, 'failed': 1}
    """
    from tqdm.auto import tqdm

    if topk < 1 or batch_size < 1:
        raise CamvizError(f"topk and batch_size must be at least 1, got {topk} and {batch_size}")
    out_dir = prepare_out(out)
    bind_folder(out_dir, run_config(net, topk=topk, alpha=alpha, cmap=cmap))
    log = RunLog(out_dir / RESULTS)
    paths = list_inputs(inputs, out_dir)
    todo = [p for p in paths if not log.done(_source(p), retry_errors)]
    counts = {"done": 0, "skipped": len(paths) - len(todo), "failed": 0}
    bar = tqdm(total=len(todo), desc="camviz run", unit="img", disable=not progress)
    for chunk in _batches(todo, batch_size):
        for p, res, err in _passes(net, chunk):
            if err is None:
                _write_one(res, 0, p, out_dir, topk, alpha, cmap, log.append)
                counts["done"] += 1
            else:
                log.append({"image": str(p), "source": _source(p), "key": image_key(p),
                            "status": "error", "error": err})
                counts["failed"] += 1
            bar.update(1)
    bar.close()
    return counts


def _source(p: Path) -> dict[str, Any]:
    try:
        return source_id(p)
    except OSError:  # missing or unreadable: reported by load_image
        return {"path": str(p.resolve()), "size": None, "mtime_ns": None}


def _passes(net: GapNet, chunk: list[Path]) -> Iterator[tuple[Path, Any, str | None]]:
    """One pass for the chunk's readable images (one by one if one of them breaks the batch);
    yields (path, one-image result, None) or (path, None, error message)."""
    ok: list[tuple[Path, Image.Image]] = []
    for p in chunk:
        try:
            ok.append((p, load_image(p)))
        except ImageError as err:
            yield p, None, str(err)
    if not ok:
        return
    try:
        res = net.run([img for _, img in ok])
    except ImageError:
        for p, img in ok:
            try:
                yield p, net.run([img]), None
            except ImageError as err:
                yield p, None, str(err)
        return
    for i, (p, _) in enumerate(ok):
        yield p, res.select(i), None


def _write_one(
    res: CamResult,
    i: int,
    path: Path,
    out_dir: Path,
    topk: int,
    alpha: float,
    cmap: str,
    write: Any,
) -> None:
    one = res.select(i)
    key = image_key(path)
    top = one.topk(topk)
    maps_t = one.cams(top.indices, size="input", normalize=True)  # (1, k, H, W)
    maps = maps_t[0].cpu().numpy()
    image = one.images()[0]
    folder = out_dir / key
    folder.mkdir(parents=True, exist_ok=True)
    files, panels, labels = [], [], []
    for rank, (c, name, prob) in enumerate(
        zip(top.indices[0].tolist(), top.names[0], top.probs[0].tolist()), start=1
    ):
        ov = overlay(image, maps[rank - 1], alpha=alpha, cmap=cmap)
        fname = f"top{rank}_{c}_{safe_name(name, 40)}.png"
        save_image(Image.fromarray(ov), folder / fname)
        files.append(f"{key}/{fname}")
        panels.append(ov)
        labels.append(f"{name} {prob:.2f}")
    save_image(grid([image, *panels], ["input", *labels]), folder / "panel.png")
    rec: dict[str, Any] = {
        "image": str(path),
        "source": _source(path),
        "key": key,
        "status": "ok",
        "input_size": list(one.input_size),
        "top": [
            {"class": c, "name": n, "prob": round(float(p), 6)}
            for c, n, p in zip(top.indices[0].tolist(), top.names[0], top.probs[0].tolist())
        ],
        "overlays": files,
        "panel": f"{key}/panel.png",
        "boxes": paper_boxes(maps_t)[0].tolist(),  # the paper's box of each top class's map
        "box_space": "network input pixels, inclusive x0 y0 x1 y1, one per top class",
    }
    write(rec)


def run_demo(out: str | os.PathLike[str], n: int = 6, device: str = "auto",
             progress: bool = True) -> list[tuple[str, Path]]:
    """``make demo``'s job: the bundled demo network on ``n`` demo-world images, into ``out``.

    Returns ``(what, folder)`` pairs, one per model run.

    Example:
        >>> run_demo("out/demo")  # doctest: +SKIP
        [('the bundled demo network on demo-world images', PosixPath('out/demo/maps'))]
    """
    from camviz.demo import write_demo_images  # the demo world loads on use
    from camviz.models import load_model

    root = Path(out)
    paths = write_demo_images(root / "inputs", n=n)
    net = load_model("demo", device=device)
    run_images(net, [str(p) for p in paths], root / "maps", topk=5, progress=progress)
    return [("the bundled demo network on demo-world images", root / "maps")]
