"""The ``camviz`` command.

``camviz run IMAGES... --model NAME --topk 5 --out DIR`` writes, for each image, overlays of its
top-k class maps (PNG, plus one panel) and one JSON Lines record in DIR/results.jsonl. A bad
file is recorded as an error and skipped; a rerun skips finished images; nothing is written
outside DIR.

Example:
    $ camviz run photos/ --model resnet50 --topk 5 --out out/photos
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from camviz.errors import CamvizError, DatasetError, ImageError
from camviz.gapnet import GapNet, load_model
from camviz.images import list_images, load_image
from camviz.localize import paper_boxes
from camviz.render import grid, overlay

# Modules that add subcommands: each exposes register(subparsers).
_EXTRA_COMMANDS: list[str] = [
    "camviz.cli_units",
    "camviz.cli_eval",
    "camviz.cli_finetune",
]

RESULTS = "results.jsonl"


def _safe_name(text: str, limit: int = 60) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return (name or "x")[:limit]


def image_keys(paths: Sequence[Path]) -> list[str]:
    """Stable, unique, filesystem-safe names for input images, from their paths.

    Example:
        >>> image_keys([Path("a/cat.jpg"), Path("b/cat.jpg")])
        ['a__cat.jpg', 'b__cat.jpg']
    """
    resolved = [p.resolve() for p in paths]
    if not resolved:
        return []
    parents = [str(p.parent) for p in resolved]
    root = os.path.commonpath(parents) if len(set(parents)) > 1 else parents[0]
    keys: list[str] = []
    seen: set[str] = set()
    for p in resolved:
        rel = os.path.relpath(p, root)
        key = "__".join(_safe_name(part, 80) for part in Path(rel).parts)
        base, n = key, 1
        while key in seen:
            n += 1
            key = f"{base}~{n}"
        seen.add(key)
        keys.append(key)
    return keys


def _atomic_save(img: Image.Image, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    os.close(fd)
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _done_keys(results: Path, retry_errors: bool) -> set[str]:
    done: set[str] = set()
    if not results.exists():
        return done
    for line in results.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: that image is redone
        if rec.get("status") == "ok" or (rec.get("status") == "error" and not retry_errors):
            done.add(rec.get("key", ""))
    return done


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


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

    Example:
        >>> run_images(net, ["photos/"], "out/photos")  # doctest: +SKIP
        {'done': 12, 'skipped': 0, 'failed': 1}
    """
    from tqdm.auto import tqdm

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = list_images(inputs)
    keys = image_keys(paths)
    results = out_dir / RESULTS
    done = _done_keys(results, retry_errors)
    todo = [(p, k) for p, k in zip(paths, keys) if k not in done]
    counts = {"done": 0, "skipped": len(paths) - len(todo), "failed": 0}
    bar = tqdm(total=len(todo), desc="camviz run", unit="img", disable=not progress)
    with results.open("a", encoding="utf-8") as log:

        def write(rec: dict[str, Any]) -> None:
            log.write(json.dumps(rec) + "\n")
            log.flush()

        for chunk in _batches(todo, batch_size):
            ok: list[tuple[Path, str, Image.Image]] = []
            for p, key in chunk:
                try:
                    ok.append((p, key, load_image(p)))
                except ImageError as err:
                    write({"image": str(p), "key": key, "status": "error", "error": str(err)})
                    counts["failed"] += 1
                    bar.update(1)
            if not ok:
                continue
            try:
                res = net.run([img for _, _, img in ok])
            except ImageError:
                # One bad image should not sink the batch: retry them one by one.
                parts = []
                for p, key, img in ok:
                    try:
                        parts.append((p, key, net.run([img])))
                    except ImageError as err:
                        write({"image": str(p), "key": key, "status": "error", "error": str(err)})
                        counts["failed"] += 1
                        bar.update(1)
                for p, key, r in parts:
                    _write_one(r, 0, p, key, out_dir, topk, alpha, cmap, write)
                    counts["done"] += 1
                    bar.update(1)
                continue
            for i, (p, key, _) in enumerate(ok):
                _write_one(res, i, p, key, out_dir, topk, alpha, cmap, write)
                counts["done"] += 1
                bar.update(1)
    bar.close()
    return counts


def _write_one(
    res: Any,
    i: int,
    path: Path,
    key: str,
    out_dir: Path,
    topk: int,
    alpha: float,
    cmap: str,
    write: Any,
) -> None:
    one = res.select(i)
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
        fname = f"top{rank}_{c}_{_safe_name(name, 40)}.png"
        _atomic_save(Image.fromarray(ov), folder / fname)
        files.append(f"{key}/{fname}")
        panels.append(ov)
        labels.append(f"{name} {prob:.2f}")
    _atomic_save(grid([image, *panels], ["input", *labels]), folder / "panel.png")
    rec: dict[str, Any] = {
        "image": str(path),
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


# ----------------------------------------------------------------------------------------------


DEMO_DEFAULT_N = 500


def demo_split(spec: str, default_n: int = DEMO_DEFAULT_N) -> Path:
    """Resolve a ``demo:SPLIT[:N]`` data spec to its cached split folder (generated on first use).

    Example:
        >>> demo_split("demo:")
        Traceback (most recent call last):
        ...
        camviz.errors.DatasetError: bad data spec 'demo:'; use demo:SPLIT or demo:SPLIT:N
    """
    fields = spec.split(":")
    if fields[0] != "demo" or len(fields) not in (2, 3) or not fields[1]:
        raise DatasetError(f"bad data spec {spec!r}; use demo:SPLIT or demo:SPLIT:N")
    try:
        n = int(fields[2]) if len(fields) == 3 else default_n
    except ValueError:
        raise DatasetError(f"bad image count in {spec!r}; use demo:SPLIT:N") from None
    from camviz.demo import ensure_split  # imported lazily: the demo world is optional

    return ensure_split(fields[1], n, progress=True)


def weights_arg(text: str) -> str | None:
    """Parse ``--weights``: "none" or "random" mean random weights (None), else a weights name.

    Example:
        >>> weights_arg("none") is None, weights_arg("IMAGENET1K_V2")
        (True, 'IMAGENET1K_V2')
    """
    return None if text.lower() in ("none", "random") else text


def model_args(p: argparse.ArgumentParser) -> None:
    """Add the options every model-running command shares: ``--model``, ``--weights``, ``--device``.

    Example:
        >>> p = argparse.ArgumentParser(); model_args(p)
        >>> p.parse_args(["--weights", "none"]).weights is None
        True
    """
    p.add_argument("--model", default="demo", help="camviz or torchvision model name")
    p.add_argument("--weights", default="DEFAULT", type=weights_arg,
                   help="weights name, DEFAULT, or none for random weights")
    p.add_argument("--device", default="auto")


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="class activation maps of the top-k classes of images")
    p.add_argument("images", nargs="+", help="image files or folders")
    model_args(p)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--cmap", default="jet")
    p.add_argument("--retry-errors", action="store_true", help="redo images that failed before")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    net = load_model(args.model, weights=args.weights, device=args.device)
    counts = run_images(
        net,
        args.images,
        args.out,
        topk=args.topk,
        batch_size=args.batch_size,
        alpha=args.alpha,
        cmap=args.cmap,
        retry_errors=args.retry_errors,
        progress=not args.no_progress,
    )
    print(
        f"{counts['done']} done, {counts['skipped']} skipped (already done), "
        f"{counts['failed']} failed -> {Path(args.out) / RESULTS}"
    )
    return 0


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="run camviz on bundled demo images (offline)")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--n", type=int, default=6, help="number of demo images")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    try:
        demo = importlib.import_module("camviz.demo")
        paths = demo.write_demo_images(inputs, n=args.n)
        net = load_model("demo", device=args.device)
        what = "the bundled demo network on demo-world images"
    except (ImportError, AttributeError, CamvizError):
        # Until the demo world lands: a random-weight resnet18 on a generated image.
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:256, 0:256]
        blob = np.exp(-((yy - 100) ** 2 + (xx - 150) ** 2) / 2000.0)
        img = (rng.random((256, 256, 3)) * 60 + blob[..., None] * [190, 120, 40]).astype(np.uint8)
        paths = [inputs / "generated.png"]
        Image.fromarray(img).save(paths[0])
        net = load_model("resnet18", weights=None, device=args.device)
        what = "a random-weight resnet18 on a generated image"
    counts = run_images(net, [str(p) for p in paths], out / "maps", topk=5)
    print(f"camviz demo: {what}; {counts['done']} images")
    print(f"output: {(out / 'maps').resolve()} (panels in */panel.png, records in {RESULTS})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``camviz`` with every subcommand registered.

    Example:
        >>> build_parser().parse_args(["run", "a.jpg", "--out", "o"]).topk
        5
    """
    parser = argparse.ArgumentParser(prog="camviz", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_demo(sub)
    for mod in _EXTRA_COMMANDS:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn any CamvizError into a one-line message and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CamvizError as err:
        print(f"camviz: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("camviz: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
