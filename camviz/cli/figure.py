"""``camviz figure``: the paper figures of :mod:`camviz.figures` as PDF, SVG or PNG files.

The format comes from the suffix of ``--out``; ``--width`` is inches, "column" (3.3 in) or
"page" (6.9 in); ``--dpi`` sets the PNG resolution (and that of images inside PDF / SVG);
``--cmap`` any matplotlib colour map (viridis by default, jet as in the paper).

Example:
    $ camviz figure top-classes photo.jpg --model resnet50 --out top5.pdf
    $ camviz figure units --model demo --data demo:test:200 --cls cart --out cart.pdf
    $ camviz figure compare --model demo --model demo-gmp a.png b.png --out gap-gmp.pdf
    $ camviz figure compare --model demo --model demo --head novel.safetensors a.png --out h.pdf
    $ camviz figure localization --model demo --data demo:test:200 --n 8 --out loc.pdf
    $ camviz figure curves --model demo --model demo-gmp --data demo:test:200 --out curves.pdf
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from camviz import figures  # light: the figure functions load matplotlib on first use
from camviz.cli.common import check_out_file, model_args, open_model, positive_int, weights_arg
from camviz.datasets import resolve_data
from camviz.datasets import resolve_metadata as resolve_eval_data
from camviz.dissect import dissect
from camviz.errors import CamvizError
from camviz.evaluate import evaluate
from camviz.files import remove_stale_temps
from camviz.heads import load_head
from camviz.images import list_images
from camviz.models import load_model
from camviz.scan import scan
from camviz.units import class_index


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output file: .pdf, .svg or .png")
    p.add_argument("--width", default="page",
                   help="inches, or column (3.3 in) or page (6.9 in); default page")
    p.add_argument("--dpi", type=float, default=300, help="PNG resolution (default 300)")
    p.add_argument("--cmap", default=figures.DEFAULT_CMAP,
                   help=f"colour map (default {figures.DEFAULT_CMAP}; jet as in the paper)")


class _HeadOfLastModel(argparse.Action):
    """``--head FILE`` belongs to the ``--model`` given just before it."""

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any,
                 option_string: str | None = None) -> None:
        models = getattr(ns, "model", None) or []
        if not models:
            parser.error("--head FILE goes after the --model it belongs to")
        ns.heads = {**(getattr(ns, "heads", None) or {}), len(models) - 1: value}


def _models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", required=True,
                   help="a model name; give --model twice or more")
    p.add_argument("--head", action=_HeadOfLastModel, metavar="FILE", dest="head_of",
                   help="a head file (camviz fit-head) for the --model just before it, e.g. "
                        "--model demo --model demo --head novel.safetensors")
    p.add_argument("--weights", default="DEFAULT", type=weights_arg,
                   help="weights name, DEFAULT, or none for random weights (all models)")
    p.add_argument("--device", default="auto")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--no-progress", action="store_true")


def register(sub: Any) -> None:
    """Add ``camviz figure`` and its five commands to camviz's argument parser.

    Example:
        >>> parser = argparse.ArgumentParser(); register(parser.add_subparsers())
        >>> parser.parse_args(["figure", "top-classes", "a.png", "--out", "f.pdf"]).width
        'page'
    """
    fig = sub.add_parser("figure", help="paper figures (PDF, SVG, PNG) with matplotlib")
    cmds = fig.add_subparsers(dest="figure", required=True)

    p = cmds.add_parser("top-classes", help="an image and the maps of its top-k classes")
    p.add_argument("image", help="an image file")
    model_args(p)
    p.add_argument("--k", type=positive_int, default=5, help="number of classes (default 5)")
    p.add_argument("--view", choices=("whole", "crop"), default="whole",
                   help="the whole photo (default) or the network's centre crop")
    _common(p)
    p.set_defaults(func=cmd_top_classes)

    p = cmds.add_parser("units", help="a class's top units over their top dataset images")
    model_args(p)
    p.add_argument("--data", required=True, help="demo:SPLIT[:N] or a dataset folder")
    p.add_argument("--cls", required=True, help="class name (or index)")
    p.add_argument("--units", type=positive_int, default=4, help="rows: top units (default 4)")
    p.add_argument("--images", type=positive_int, default=4, help="top images per unit (default 4)")
    p.add_argument("--order", choices=("weight", "contribution"), default="weight")
    p.add_argument("--show", choices=("mask", "map"), default="mask")
    p.add_argument("--level", type=float, default=0.995, help="unit threshold quantile")
    p.add_argument("--no-dissect", action="store_true",
                   help="do not label units with parts, even when the data has part masks")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the scan cache")
    _data_args(p)
    _common(p)
    p.set_defaults(func=cmd_units)

    p = cmds.add_parser("compare", help="the same images through several networks")
    p.add_argument("images", nargs="+", help="image files or folders")
    _models(p)
    p.add_argument("--cls", default=None, help="one class for every map (default: top-1)")
    p.add_argument("--view", choices=("whole", "crop"), default="whole",
                   help="the whole photos (default) or the networks' centre crops")
    _common(p)
    p.set_defaults(func=cmd_compare)

    p = cmds.add_parser("localization", help="examples with ground-truth and CAM boxes")
    model_args(p)
    p.add_argument("--data", required=True, help="demo:SPLIT[:N] or METADATA_DIR[:IMAGE_ROOT]")
    p.add_argument("--n", type=positive_int, default=8, help="number of examples (default 8)")
    p.add_argument("--cols", type=positive_int, default=4)
    p.add_argument("--threshold", type=float, default=0.2, help="box threshold (x max)")
    _common(p)
    p.set_defaults(func=cmd_localization)

    p = cmds.add_parser("curves", help="box accuracy and pixel precision-recall curves")
    _models(p)
    p.add_argument("--data", required=True, help="demo:SPLIT[:N] or METADATA_DIR[:IMAGE_ROOT]")
    p.add_argument("--limit", type=positive_int, default=None, help="score only the first N images")
    _data_args(p)
    _common(p)
    p.set_defaults(func=cmd_curves)


def _write(fig: Any, args: argparse.Namespace) -> int:
    out = figures.save(fig, args.out, dpi=args.dpi)
    print(f"output: {out.resolve()}")
    return 0


def _check(args: argparse.Namespace) -> None:
    """Fail on a bad suffix, width, dpi, colour map or output path before any network runs;
    remove what a killed run left beside ``--out``."""
    figures.figure_format(args.out)
    out = check_out_file(args.out)
    figures.figure_width(args.width)
    figures.colormap(args.cmap)
    if args.dpi <= 0:
        raise CamvizError(f"--dpi must be > 0, got {args.dpi:g}")
    remove_stale_temps(out.parent, name=out.name, recursive=False)


def cmd_top_classes(args: argparse.Namespace) -> int:
    """``camviz figure top-classes``."""
    _check(args)
    net = open_model(args)
    res = net.run([args.image], view=args.view)
    return _write(figures.top_classes(res, 0, args.k, width=args.width, cmap=args.cmap), args)


def cmd_units(args: argparse.Namespace) -> int:
    """``camviz figure units``: scan ``--data`` (cached), dissect it when it has parts."""
    _check(args)
    net = open_model(args)
    class_index(net.classes, args.cls)
    data = resolve_data(args.data, net.transform)
    if len(data) == 0:
        raise CamvizError(f"{args.data} holds no images: the units figure needs a dataset")
    stats = scan(net, data, batch_size=args.batch_size, level=args.level,
                 cache=not args.no_cache, progress=not args.no_progress)
    d = None
    if not args.no_dissect and getattr(data, "part_names", None):
        d = dissect(net, data, stats, level=args.level, batch_size=args.batch_size,
                    progress=not args.no_progress)
    fig = figures.class_units(net, stats, data, args.cls, units=args.units, images=args.images,
                              order=args.order, dissection=d, level=args.level, show=args.show,
                              width=args.width, cmap=args.cmap)
    return _write(fig, args)


def _load_all(args: argparse.Namespace) -> dict[str, Any]:
    """The networks of every ``--model`` (with its ``--head``), by row label; one given twice
    with the same head is one row."""
    heads, bases, nets, seen = getattr(args, "heads", None) or {}, {}, {}, set()
    for i, name in enumerate(args.model):
        head = heads.get(i)
        if (name, head) in seen:
            continue
        seen.add((name, head))
        if name not in bases:
            bases[name] = load_model(name, weights=args.weights, device=args.device)
        label = name if head is None else f"{name} + {Path(head).stem}"
        label = label if label not in nets else f"{label} ({i + 1})"
        nets[label] = load_head(bases[name], head) if head else bases[name]
    return nets


def cmd_compare(args: argparse.Namespace) -> int:
    """``camviz figure compare``."""
    _check(args)
    paths = list_images(args.images)
    if not paths:
        raise CamvizError(f"no images found in {' '.join(args.images)}")
    nets = _load_all(args)
    for net in nets.values():
        if args.cls is not None:
            class_index(net.classes, args.cls)
    fig = figures.compare(nets, [str(p) for p in paths], cls=args.cls, width=args.width,
                          cmap=args.cmap, view=args.view)
    return _write(fig, args)


def cmd_localization(args: argparse.Namespace) -> int:
    """``camviz figure localization``."""
    _check(args)
    net = open_model(args)
    meta = resolve_eval_data(args.data)
    fig = figures.localization(net, meta, n=args.n, threshold=args.threshold, cols=args.cols,
                               width=args.width, cmap=args.cmap)
    return _write(fig, args)


def cmd_curves(args: argparse.Namespace) -> int:
    """``camviz figure curves``: ``camviz eval`` of each model, then its curves."""
    _check(args)
    nets = _load_all(args)
    meta = resolve_eval_data(args.data)
    if len(meta) == 0:
        raise CamvizError(f"{args.data} holds no images: there is nothing to evaluate")
    results = {name: evaluate(net, meta, batch_size=args.batch_size, limit=args.limit,
                              progress=not args.no_progress) for name, net in nets.items()}
    return _write(figures.curves(results, width=args.width), args)


__all__ = ["register", "cmd_top_classes", "cmd_units", "cmd_compare", "cmd_localization",
           "cmd_curves"]
