"""Throughput of camviz.scan vs a bare forward pass over the same DataLoader (same run).

Both loops read the same in-memory dataset through the same DataLoader settings; the bare loop
calls ``net.model(x)`` under inference mode and nothing else. Runs alternate (bare, scan, scan,
bare, ...) after one warm-up of each, and the median of each is reported with the ratio
scan / bare throughput (target >= 0.9), also as the median of the ratios of adjacent pairs
(adjacent runs share the machine's load, which matters on a shared CPU).

    .venv/bin/python benchmarks/bench_scan.py [--model resnet18] [--images 64] [--size 224]
        [--device cuda] [--autocast bf16] [--json out.json]

With ``--autocast`` both loops run under that autocast (the scan's statistics stay float32).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import camviz  # noqa: E402
from camviz.scan import make_loader, scan  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--autocast", choices=["bf16", "fp16"], default=None)
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.autocast)

    torch.manual_seed(0)
    net = camviz.load_model(args.model, weights=None, device=args.device)
    data = [torch.randn(3, args.size, args.size) for _ in range(args.images)]
    loader = make_loader(data, batch_size=args.batch_size)

    def sync() -> None:
        if net.device.type == "cuda":
            torch.cuda.synchronize()

    cpu: dict[str, list[float]] = {"bare": [], "scan": []}

    def amp() -> contextlib.AbstractContextManager:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=net.device.type, dtype=dtype)

    def bare() -> float:
        t, c = time.perf_counter(), time.process_time()
        with torch.inference_mode(), amp():
            for batch in loader:  # collate's dicts: "image", "label", "failed"
                net.model(batch["image"].to(net.device))
        sync()
        cpu["bare"].append(time.process_time() - c)
        return time.perf_counter() - t

    def scanned() -> float:
        t, c = time.perf_counter(), time.process_time()
        scan(net, data, batch_size=args.batch_size, cache=False, progress=False,
             autocast=args.autocast)
        sync()
        cpu["scan"].append(time.process_time() - c)
        return time.perf_counter() - t

    bare(), scanned()  # warm-up
    tb, ts = [], []
    for i in range(args.runs):  # alternate which goes first, so order effects cancel
        if i % 2:
            ts.append(scanned())
            tb.append(bare())
        else:
            tb.append(bare())
            ts.append(scanned())
    mb, ms = statistics.median(tb), statistics.median(ts)
    print(f"model {args.model} {args.size}px, {args.images} images, batch {args.batch_size}, "
          f"device {net.device}, torch threads {torch.get_num_threads()}")
    print(f"bare forward: {args.images / mb:8.1f} img/s (median of {args.runs}: {mb:.3f} s)")
    print(f"camviz.scan : {args.images / ms:8.1f} img/s (median of {args.runs}: {ms:.3f} s)")
    pairs = sorted(b / s for b, s in zip(tb, ts, strict=True))
    print(f"ratio scan/bare throughput: {mb / ms:.3f} (medians); median of pair ratios "
          f"{statistics.median(pairs):.3f} (range {pairs[0]:.3f} .. {pairs[-1]:.3f}); "
          f"fastest runs {min(tb) / min(ts):.3f}")
    cb, cs = statistics.median(cpu["bare"][1:]), statistics.median(cpu["scan"][1:])
    print(f"process CPU time (all threads; robust to other jobs on a shared machine): bare "
          f"{cb:.3f} s, scan {cs:.3f} s, ratio {cb / cs:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"bench": "scan", "model": args.model, "batch": args.batch_size,
                       "device": str(net.device), "autocast": args.autocast,
                       "bare": args.images / mb, "camviz": args.images / ms, "unit": "img/s",
                       "ratio": ms / mb}, fh)


if __name__ == "__main__":
    main()
