"""``camviz scan`` and ``camviz dissect``: dataset-scale unit statistics and part dissection.

``camviz scan --model demo --data demo:test --out stats.npz`` runs one pass and writes the
:class:`~camviz.scan.UnitStats` file. ``camviz dissect --model demo --data demo:test --out DIR``
scans (or reads ``--stats FILE``), measures every unit's IoU with every part and writes
``DIR/dissection.json``, ``DIR/dissection.md`` and, with ``--galleries``, one PNG per class
(its top units, each over its top images, masked).

Data specs: ``demo:SPLIT`` or ``demo:SPLIT:N`` (the demo world's split of N images, default
500, generated once into the cache), a folder in the camviz.demo / wsolevaluation layout
(``image_ids.txt``, plus ``parts.txt`` for dissect), or a folder of image files (scan only).

Example:
    $ camviz scan --model demo --data demo:test:200 --out out/demo-stats.npz
    $ camviz dissect --model demo --data demo:test:200 --out out/dissect --galleries
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from camviz.cli import demo_split, model_args
from camviz.errors import DatasetError

DEMO_DEFAULT_N = 500


class ImageFiles(Dataset):
    """Image files as dataset items (PIL images; ``scan`` applies the network's transform).

    Example:
        >>> len(ImageFiles([]))
        0
    """

    def __init__(self, paths: list[Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        from camviz.images import load_image

        return load_image(self.paths[i])


def resolve_data(spec: str, transform: Any = None, need_parts: bool = False) -> Dataset:
    """Turn a data spec (``demo:SPLIT[:N]`` or a folder) into a dataset for scan / dissect.

    Example:
        >>> resolve_data("/no/such/folder")
        Traceback (most recent call last):
        ...
        camviz.errors.DatasetError: data folder /no/such/folder does not exist; ...
    """
    from camviz.units import PartsFolder

    if spec.startswith("demo:"):
        root = demo_split(spec, DEMO_DEFAULT_N)
        return PartsFolder(root, transform=transform)
    root = Path(spec)
    if not root.is_dir():
        raise DatasetError(f"data folder {spec} does not exist; give a folder or demo:SPLIT")
    if (root / "parts.txt").is_file():
        return PartsFolder(root, transform=transform)
    if need_parts:
        raise DatasetError(
            f"{spec} has no parts.txt, so there are no part masks to dissect against; use a "
            "folder in the camviz.demo layout (see `python -m camviz.demo generate`)"
        )
    if (root / "image_ids.txt").is_file() and (root / "class_labels.txt").is_file():
        from camviz.datasets import WsolDataset  # wsolevaluation metadata: labels too

        return WsolDataset(root, transform=transform)
    if (root / "image_ids.txt").is_file():
        from camviz.units import _read_csv, _safe

        return ImageFiles([_safe(root, r[0]) for r in _read_csv(root / "image_ids.txt")])
    from camviz.images import list_images

    paths = list_images([root])
    if not paths:
        raise DatasetError(f"no images found under {spec}")
    return ImageFiles(paths)


def _common(p: argparse.ArgumentParser) -> None:
    model_args(p)
    p.add_argument("--data", required=True, help="demo:SPLIT[:N] or a dataset folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--top-n", type=int, default=16, help="top images kept per unit")
    p.add_argument("--level", type=float, default=0.995,
                   help="quantile level of the unit thresholds (Network Dissection: 0.995)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the scan cache")
    p.add_argument("--no-progress", action="store_true")


def register(sub: Any) -> None:
    """Add the ``scan`` and ``dissect`` subcommands to camviz's argument parser.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(); register(parser.add_subparsers())
        >>> parser.parse_args(["scan", "--data", "demo:test", "--out", "s.npz"]).top_n
        16
    """
    p = sub.add_parser("scan", help="one pass over a dataset: unit quantiles and top images")
    _common(p)
    p.add_argument("--out", required=True, help="output .npz file")
    p.set_defaults(func=cmd_scan)

    d = sub.add_parser("dissect", help="IoU of each unit's masks with part masks")
    _common(d)
    d.add_argument("--stats", help="a scan file to use instead of scanning --data")
    d.add_argument("--iou", type=float, default=0.04, help="IoU that makes a part detector")
    d.add_argument("--top-k", type=int, default=5, help="top units per class in the summary")
    d.add_argument("--galleries", action="store_true", help="write one PNG per class")
    d.add_argument("--mask-size", type=int, default=None,
                   help="compare unit and part masks at this size (default: the input size)")
    d.add_argument("--out", required=True, help="output folder (created)")
    d.set_defaults(func=cmd_dissect)


def _scan(args: argparse.Namespace, net: Any, data: Dataset) -> Any:
    from camviz.scan import scan

    return scan(net, data, batch_size=args.batch_size, num_workers=args.workers,
                top_n=args.top_n, level=args.level, cache=not args.no_cache,
                progress=not args.no_progress)


def cmd_scan(args: argparse.Namespace) -> int:
    """``camviz scan``: write the UnitStats of ``--model`` over ``--data`` to ``--out``."""
    from camviz.gapnet import load_model

    net = load_model(args.model, weights=args.weights, device=args.device)
    data = resolve_data(args.data, net.transform)
    stats = _scan(args, net, data)
    out = stats.save(args.out)
    t = stats.thresholds()
    print(f"camviz scan: {stats.num_images} images, {stats.num_units} units, "
          f"feature map {stats.feature_size[0]}x{stats.feature_size[1]}; "
          f"T({stats.level}) median {float(t.median()):.4g}")
    print(f"output: {out.resolve()}")
    return 0


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def cmd_dissect(args: argparse.Namespace) -> int:
    """``camviz dissect``: unit/part IoU report (JSON + Markdown) and optional galleries."""
    from camviz.cli import _safe_name
    from camviz.gapnet import load_model
    from camviz.scan import UnitStats
    from camviz.units import class_gallery, dissect

    net = load_model(args.model, weights=args.weights, device=args.device)
    data = resolve_data(args.data, net.transform, need_parts=True)
    stats = UnitStats.load(args.stats, device=net.device) if args.stats else _scan(args, net, data)
    if stats.num_units != net.num_units:
        raise DatasetError(f"{args.stats} was scanned with a network of {stats.num_units} "
                           f"units, not {args.model} ({net.num_units}); rescan")
    d = dissect(net, data, stats, level=args.level, iou_threshold=args.iou,
                batch_size=args.batch_size, num_workers=args.workers,
                progress=not args.no_progress, mask_size=args.mask_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    class_parts = data.class_parts(net.classes) if hasattr(data, "class_parts") else None
    report = d.to_dict(net, k=args.top_k, class_parts=class_parts)
    report["model"], report["data"] = args.model, args.data
    _atomic_text(out / "dissection.json", json.dumps(report, indent=1) + "\n")
    n_det = sum(lab is not None for lab in d.labels)
    md = (f"# Dissection of {args.model} on {args.data}\n\n"
          f"{d.num_images} images, level {args.level}, IoU >= {args.iou}: "
          f"{n_det}/{len(d.labels)} units are part detectors "
          f"({', '.join(f'{p}: {n}' for p, n in report['detectors'].items())}).\n\n"
          f"{d.table(net, k=args.top_k, class_parts=class_parts)}\n")
    _atomic_text(out / "dissection.md", md)
    if args.galleries:
        for c, name in enumerate(net.classes):
            img = class_gallery(net, data, stats, c, k=args.top_k, n=5, level=args.level,
                                dissection=d)
            img.save(out / f"class_{c:03d}_{_safe_name(name)}.png")
    print(md)
    print(f"output: {out.resolve()}")
    return 0
