"""``camviz scan`` and ``camviz dissect``: dataset-scale unit statistics and part dissection.

``camviz scan --model demo --data demo:test --out stats.npz`` runs one pass and writes the
:class:`~camviz.scan.UnitStats` file. ``camviz dissect --model demo --data demo:test --out DIR``
scans (or reads ``--stats FILE``), measures every unit's IoU with every part and writes
``DIR/dissection.json``, ``DIR/dissection.md`` and, with ``--galleries``, one PNG per class
(its top units, each over its top images, masked). Data specs: see
:mod:`camviz.datasets.specs` (dissect needs part masks: the demo layout's ``parts.txt``).

A scan writes its partial state every ``--checkpoint-every`` batches into ``--checkpoint``
(default: ``OUT.partial`` beside the output), so a killed scan rerun with the same arguments
resumes; under ``torchrun --nproc_per_node N -m camviz scan ...`` every process scans its shard
and rank 0 writes the output.

Example:
    $ camviz scan --model demo --data demo:test:200 --out out/demo-stats.npz
    $ camviz dissect --model demo --data demo:test:200 --out out/dissect --galleries
    $ torchrun --nproc_per_node 2 -m camviz scan --model demo --data demo:test --out s.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from camviz.cli.common import (
    check_out_dir,
    check_out_file,
    data_arg,
    model_args,
    nonnegative_int,
    open_model,
    positive_int,
)
from camviz.datasets import resolve_data
from camviz.dissect import dissect
from camviz.distributed import joined, world
from camviz.files import remove_stale_temps, save_image, write_text
from camviz.galleries import class_gallery
from camviz.gapnet import GapNet
from camviz.runner import safe_name
from camviz.scan import UnitStats, scan

__all__ = ["register", "cmd_scan", "cmd_dissect"]


def _common(p: argparse.ArgumentParser) -> None:
    model_args(p)
    data_arg(p)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--workers", type=nonnegative_int, default=0,
                   help="DataLoader worker processes")
    p.add_argument("--top-n", type=positive_int, default=16, help="top images kept per unit")
    p.add_argument("--level", type=float, default=0.995,
                   help="quantile level of the unit thresholds (Network Dissection: 0.995)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the scan cache")
    p.add_argument("--checkpoint", default=None,
                   help="folder for the scan's partial state (default: OUT.partial); a rerun "
                   "with the same arguments resumes from it")
    p.add_argument("--checkpoint-every", type=nonnegative_int, default=50,
                   help="write the partial state every N batches (0: never)")
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
    d.add_argument("--top-k", type=positive_int, default=5,
                   help="top units per class in the summary")
    d.add_argument("--galleries", action="store_true", help="write one PNG per class")
    d.add_argument("--mask-size", type=positive_int, default=None,
                   help="compare unit and part masks at this size (default: the input size)")
    d.add_argument("--out", required=True, help="output folder (created)")
    d.set_defaults(func=cmd_dissect)


def _scan(args: argparse.Namespace, net: GapNet, data: Any, partial: Path) -> UnitStats:
    return scan(net, data, batch_size=args.batch_size, num_workers=args.workers,
                top_n=args.top_n, level=args.level, cache=not args.no_cache,
                progress=not args.no_progress, checkpoint=args.checkpoint or partial,
                checkpoint_every=args.checkpoint_every)


def failures(what: str, failed: list[Any]) -> str:
    """One line about the items a pass left out, or "" when none was.

    Example:
        >>> failures("scan", [["a.png", "truncated file"]])
        'camviz scan: 1 item(s) left out or relabelled, e.g. a.png: truncated file'
    """
    if not failed:
        return ""
    return (f"camviz {what}: {len(failed)} item(s) left out or relabelled, e.g. "
            f"{failed[0][0]}: {failed[0][1]}")


def cmd_scan(args: argparse.Namespace) -> int:
    """``camviz scan``: write the UnitStats of ``--model`` over ``--data`` to ``--out``
    (under torchrun: every rank scans its shard, rank 0 writes)."""
    target = check_out_file(args.out)
    partial = check_out_dir(args.checkpoint or f"{args.out}.partial", "--checkpoint")
    remove_stale_temps(target.parent, name=target.name, recursive=False)
    with joined(args.device) as args.device:
        net = open_model(args)
        data = resolve_data(args.data, net.transform)
        stats = _scan(args, net, data, partial)
        if world()[0] != 0:
            return 0
        out = stats.save(args.out)
    t = stats.thresholds()
    note = failures("scan", stats.meta.get("failed", []))
    if note:
        print(note)
    if stats.meta.get("resumed"):
        print(f"camviz scan: resumed from a checkpoint ({stats.meta['resumed']} items were done)")
    print(f"camviz scan: {stats.num_images} images, {stats.num_units} units, "
          f"feature map {stats.feature_size[0]}x{stats.feature_size[1]}; "
          f"T({stats.level}) median {float(t.median()):.4g}")
    print(f"output: {out.resolve()}")
    return 0


def cmd_dissect(args: argparse.Namespace) -> int:
    """``camviz dissect``: unit/part IoU report (JSON + Markdown) and optional galleries
    (under torchrun: every rank dissects its shard, rank 0 writes)."""
    out = check_out_dir(args.out)
    partial = out / "scan.partial"
    if not args.stats:
        partial = check_out_dir(args.checkpoint or partial, "--checkpoint")
    remove_stale_temps(out, recursive=False)  # OUT is dissect's own: its files' leftovers
    with joined(args.device) as args.device:
        net = open_model(args)
        data = resolve_data(args.data, net.transform, need="parts")
        stats = (UnitStats.load(args.stats, device=net.device) if args.stats
                 else _scan(args, net, data, partial))
        d = dissect(net, data, stats, level=args.level, iou_threshold=args.iou,
                    batch_size=args.batch_size, num_workers=args.workers,
                    progress=not args.no_progress, mask_size=args.mask_size)
        if world()[0] != 0:
            return 0
    return _write_dissection(args, net, data, stats, d)


def _write_dissection(args: argparse.Namespace, net: GapNet, data: Any, stats: UnitStats,
                      d: Any) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    class_parts = data.class_parts(net.classes) if hasattr(data, "class_parts") else None
    report = d.to_dict(net, k=args.top_k, class_parts=class_parts)
    report["model"], report["data"] = args.model, args.data
    write_text(out / "dissection.json", json.dumps(report, indent=1) + "\n")
    n_det = sum(lab is not None for lab in d.labels)
    md = (f"# Dissection of {args.model} on {args.data}\n\n"
          f"{d.num_images} images, level {args.level}, IoU >= {args.iou}: "
          f"{n_det}/{len(d.labels)} units are part detectors "
          f"({', '.join(f'{p}: {n}' for p, n in report['detectors'].items())}).\n\n"
          f"{d.table(net, k=args.top_k, class_parts=class_parts)}\n")
    write_text(out / "dissection.md", md)
    if args.galleries:
        for c, name in enumerate(net.classes):
            img = class_gallery(net, data, stats, c, k=args.top_k, n=5, level=args.level,
                                dissection=d)
            save_image(img, out / f"class_{c:03d}_{safe_name(name)}.png")
    note = failures("dissect", d.meta.get("failed", []))
    if note:
        print(note)
    print(md)
    print(f"output: {out.resolve()}")
    return 0
