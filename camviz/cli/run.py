"""``camviz run`` (class maps of image files) and ``camviz demo`` (the bundled showcase).

Example:
    >>> p = argparse.ArgumentParser(); register(p.add_subparsers())
    >>> p.parse_args(["run", "a.jpg", "--out", "o"]).topk
    5
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from camviz.cli.common import model_args, open_model, positive_int
from camviz.runner import RESULTS, run_demo, run_images

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``run`` and ``demo`` to camviz's subcommands.

    Example:
        >>> p = argparse.ArgumentParser(); register(p.add_subparsers())
        >>> p.parse_args(["demo"]).n
        6
    """
    p = sub.add_parser("run", help="class activation maps of the top-k classes of images")
    p.add_argument("images", nargs="+", help="image files or folders")
    model_args(p)
    p.add_argument("--topk", type=positive_int, default=5)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--cmap", default="jet")
    p.add_argument("--view", choices=("whole", "crop"), default="whole",
                   help="whole: each whole photo, no crop (default); crop: the network's "
                        "centre crop. Overlays and boxes are on the photo's own pixels either way")
    p.add_argument("--retry-errors", action="store_true", help="redo images that failed before")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="run camviz on bundled images (offline)")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--n", type=positive_int, default=6, help="number of demo-world images")
    d.add_argument("--device", default="auto")
    d.set_defaults(func=cmd_demo)


def cmd_run(args: argparse.Namespace) -> int:
    """``camviz run``: maps of ``args.images`` into ``args.out``."""
    net = open_model(args)
    counts = run_images(
        net, args.images, args.out, topk=args.topk, batch_size=args.batch_size,
        alpha=args.alpha, cmap=args.cmap, retry_errors=args.retry_errors,
        progress=not args.no_progress, view=args.view,
    )
    print(f"{counts['done']} done, {counts['skipped']} skipped (already done), "
          f"{counts['failed']} failed -> {Path(args.out) / RESULTS}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``camviz demo``: the showcase; prints where its panels are."""
    for what, folder in run_demo(args.out, n=args.n, device=args.device):
        print(f"camviz demo: {what}")
        if folder is not None:
            units = ", top units in */units.png" if (folder / "photo-inputs").exists() or any(
                folder.glob("*/units.png")) else ""
            print(f"output: {folder.resolve()} (panels in */panel.png{units}, records in "
                  f"{RESULTS})")
    return 0
