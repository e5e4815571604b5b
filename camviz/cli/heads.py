"""``camviz fit-head``: a new linear head for your own classes on a network's frozen trunk.

``camviz fit-head --model M --data SPEC --out head.safetensors`` pools the last conv features of
``SPEC``'s images (one pass, cached), fits a linear head (``--loss softmax`` or ``svm``, L2
strength chosen on a held-out part), prints the held-out accuracy and writes the head file, which
``--head FILE`` gives to ``camviz run``, ``eval``, ``scan``, ``dissect`` and ``figure`` (and
``camviz.load_head`` to Python). ``SPEC``: a folder with one sub-folder per class (ImageFolder
layout), a wsolevaluation metadata folder (``class_labels.txt``; names from ``classes.txt``),
or a demo split (``demo-novel:train:200``: classes the demo net never saw).

Example:
    $ camviz fit-head --model demo --data demo-novel:train:200 --out novel.safetensors
    $ camviz eval --model demo --head novel.safetensors --data demo-novel:test:200
"""

from __future__ import annotations

import argparse
from typing import Any

from camviz.cli.common import (
    check_out_file,
    data_arg,
    model_args,
    nonnegative_int,
    open_model,
    positive_int,
)
from camviz.datasets import resolve_data
from camviz.files import remove_stale_temps
from camviz.heads import LOSSES, fit_head_details

__all__ = ["register", "cmd_fit_head"]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value:g}")
    return value


def register(sub: Any) -> None:
    """Add ``fit-head`` to camviz's subcommands.

    Example:
        >>> p = argparse.ArgumentParser(); register(p.add_subparsers())
        >>> p.parse_args(["fit-head", "--data", "d", "--out", "h.safetensors"]).loss
        'softmax'
    """
    p = sub.add_parser("fit-head", help="fit a new linear head for your classes on a frozen trunk")
    model_args(p, head=False)
    data_arg(p, "a folder with one sub-folder per class, or METADATA_DIR[:IMAGE_ROOT]")
    p.add_argument("--out", required=True, help="the head file to write (.safetensors)")
    p.add_argument("--loss", choices=LOSSES, default="softmax",
                   help="softmax (multinomial logistic regression) or svm (one-vs-rest "
                   "squared hinge, as liblinear)")
    p.add_argument("--l2", type=float, nargs="+", default=None,
                   help="L2 strength(s) to choose from on the held-out part "
                   "(default 1e-1 ... 1e-5)")
    p.add_argument("--holdout", type=_fraction, default=0.2,
                   help="fraction of each class held out to choose --l2 (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--workers", type=nonnegative_int, default=0,
                   help="DataLoader worker processes")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the pooled-feature cache")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_fit_head)


def cmd_fit_head(args: argparse.Namespace) -> int:
    """``camviz fit-head``: fit, print the held-out accuracy, write ``--out``."""
    out = check_out_file(args.out)
    remove_stale_temps(out.parent, name=out.name, recursive=False)
    net = open_model(args)
    data = resolve_data(args.data, net.transform, need="labels")
    r = fit_head_details(net, data, loss=args.loss, l2=args.l2, holdout=args.holdout,
                         seed=args.seed, batch_size=args.batch_size, num_workers=args.workers,
                         cache=not args.no_cache, progress=not args.no_progress)
    new, fit, pooled = r.net, r.fit, r.pooled
    c = new.num_classes
    new.save_head(out)
    print(f"camviz fit-head: {len(pooled.labels)} images of {c} classes "
          f"({', '.join(new.classes[:8])}{', ...' if c > 8 else ''}), {net.num_units} units, "
          f"{args.loss} head")
    if pooled.failed:
        print(f"  failed to load (left out): {len(pooled.failed)}, e.g. {pooled.failed[0]}")
    for l2, acc, loss in fit.grid:
        mark = "  <- chosen" if l2 == fit.l2 else ""
        print(f"  l2 {l2:<8g} held-out accuracy {acc:6.2f}%  loss {loss:.4f}{mark}")
    if fit.holdout_accuracy is not None:
        print(f"  held-out accuracy {fit.holdout_accuracy:.2f}% on {fit.n_holdout} images "
              f"(l2 {fit.l2:g}, fitted on {fit.n_train}); refitted on all {len(pooled.labels)}")
    print(f"  training accuracy {fit.train_accuracy:.2f}%")
    print(f"output: {out.resolve()}")
    return 0
