"""``python -m camviz.demo``: write demo splits or a handful of demo images.

    python -m camviz.demo generate --split test --n 1000 --out DIR   # a split, wsol layout
    python -m camviz.demo images --n 6 --out out/demo-images         # just PNGs, for `camviz run`
    python -m camviz.demo cache --split test --n 1000                # into the cache, print path
    python -m camviz.demo cache --split train --n 200 --classes novel  # the novel classes

Example:
    >>> main(["images", "--n", "1", "--out", __import__("tempfile").mkdtemp()])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import sys

from camviz.demo.groundtruth import ensure_split, write_demo_images, write_split
from camviz.demo.world import WORLD_SEED
from camviz.errors import CamvizError


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m camviz.demo``."""
    p = argparse.ArgumentParser(prog="python -m camviz.demo", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write a split in the wsolevaluation layout (+ parts)")
    g.add_argument("--split", default="test", help="train, val, test or any name (own images)")
    g.add_argument("--n", type=int, default=1000)
    g.add_argument("--out", required=True, help="folder to write (the split's root)")
    g.add_argument("--start", type=int, default=0, help="index of the first image")
    g.add_argument("--seed", type=int, default=WORLD_SEED)
    g.add_argument("--workers", type=int, default=1)
    g.add_argument("--classes", default="base", choices=("base", "novel"),
                   help="class set: base (the demo nets' 9) or novel (4 unseen arrangements)")
    im = sub.add_parser("images", help="write a few demo images (one class after another)")
    im.add_argument("--n", type=int, default=6)
    im.add_argument("--out", required=True)
    c = sub.add_parser("cache", help="generate a split into the cache once; print its folder")
    c.add_argument("--split", default="test")
    c.add_argument("--n", type=int, default=1000)
    c.add_argument("--classes", default="base", choices=("base", "novel"))
    a = p.parse_args(argv)
    try:
        if a.cmd == "generate":
            root = write_split(a.split, a.n, a.out, seed=a.seed, start=a.start, workers=a.workers,
                               classes=a.classes)
            print(root)
        elif a.cmd == "images":
            for path in write_demo_images(a.out, n=a.n):
                print(path)
        else:
            print(ensure_split(a.split, a.n, progress=True, classes=a.classes))
    except CamvizError as err:
        print(f"camviz.demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
