"""Throughput of camviz.evaluate against a bare forward pass over the same images (same run).

Both read the same metadata folder through the same DataLoader settings and the evaluation's
own geometry (the whole image resized to the network input); the bare loop calls
``net.model(x)`` under inference mode and nothing else, the other is ``camviz.evaluate`` (the
pass, the ground-truth maps, MaxBoxAcc V1/V2, the CAM paper's localization, PxAP, the pointing
game). Runs alternate after one warm-up of each (which also compiles the metric kernels);
medians. The ratio is camviz's time over the bare pass's.

    .venv/bin/python benchmarks/bench_eval.py [--model demo] [--data data/demo-fixture]
        [--batch-size 16] [--runs 3] [--device cuda] [--autocast bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

import camviz  # noqa: E402
from camviz.datasets import WsolDataset, collate  # noqa: E402
from camviz.evaluate import eval_transform  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--weights", default=None, help="weights name (default: the demo's "
                    "bundled ones, random weights for other models)")
    ap.add_argument("--data", default=str(ROOT / "data" / "demo-fixture"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--autocast", choices=["bf16", "fp16"], default=None)
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()
    weights = args.weights or ("DEFAULT" if args.model.startswith("demo") else None)
    net = camviz.load_model(args.model, weights=weights, device=args.device)
    meta = camviz.WsolMetadata(args.data)
    tf = eval_transform(net)
    loader = DataLoader(WsolDataset(meta, transform=tf, map_size=tf.resize[::-1]),
                        batch_size=args.batch_size, collate_fn=collate)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.autocast)

    def sync() -> None:
        if net.device.type == "cuda":
            torch.cuda.synchronize()

    def bare() -> float:
        t = time.perf_counter()
        amp = (torch.autocast(device_type=net.device.type, dtype=dtype) if dtype
               else contextlib.nullcontext())
        with torch.inference_mode(), amp:
            for batch in loader:
                net.model(batch["image"].to(net.device))
        sync()
        return time.perf_counter() - t

    def evaluated() -> float:
        t = time.perf_counter()
        camviz.evaluate(net, meta, batch_size=args.batch_size, progress=False,
                        autocast=args.autocast)
        sync()
        return time.perf_counter() - t

    bare(), evaluated()  # warm-up (numba kernels compile on the first evaluation)
    tb, te = [], []
    for i in range(args.runs):
        order = (bare, evaluated) if i % 2 == 0 else (evaluated, bare)
        for fn in order:
            (tb if fn is bare else te).append(fn())
    mb, me = statistics.median(tb), statistics.median(te)
    n = len(meta)
    print(f"{args.model} on {args.data} ({n} images), batch {args.batch_size}, device "
          f"{net.device}{', autocast ' + args.autocast if args.autocast else ''}: bare forward "
          f"{n / mb:.1f} img/s, camviz.evaluate {n / me:.1f} img/s, time ratio {me / mb:.2f} "
          f"(median of {args.runs})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"bench": "eval", "model": args.model, "batch": args.batch_size,
                       "device": str(net.device), "autocast": args.autocast,
                       "bare": n / mb, "camviz": n / me, "unit": "img/s", "ratio": me / mb}, fh)


if __name__ == "__main__":
    main()
