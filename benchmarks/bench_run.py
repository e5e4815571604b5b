"""Benchmark: GapNet.run plus top-5 maps upsampled to the input, against the bare model(x).

Same process, same batch, interleaved runs, medians. Target: ratio <= 1.05 for resnet50 at
batch 16 on the CPU.

    .venv/bin/python benchmarks/bench_run.py [--model resnet50] [--batch 16] [--repeats 7]
        [--device cuda] [--autocast bf16] [--json out.json]

With ``--autocast`` both the bare forward and camviz's pass run under that autocast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

import camviz


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--autocast", choices=["bf16", "fp16"], default=None)
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.autocast)

    net = camviz.load_model(args.model, weights=None, device=args.device)
    model = net.model
    size = net.transform.crop
    x = torch.randn(args.batch, 3, *size, device=net.device)

    def sync() -> None:
        if net.device.type == "cuda":
            torch.cuda.synchronize()

    def amp() -> contextlib.AbstractContextManager:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=net.device.type, dtype=dtype)

    def bare() -> None:
        with torch.inference_mode(), amp():
            model(x)
        sync()

    def camviz_run() -> None:
        res = net.run(x, autocast=args.autocast)
        res.cams(res.topk(5).indices, size="input", normalize=True)
        sync()

    for fn in (bare, camviz_run):  # warm-up
        fn()
    times: dict[str, list[float]] = {"bare": [], "camviz": []}
    for _ in range(args.repeats):
        for name, fn in (("bare", bare), ("camviz", camviz_run)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    b, c = statistics.median(times["bare"]), statistics.median(times["camviz"])
    print(
        f"{args.model} batch {args.batch} on {net.device} ({torch.get_num_threads()} threads): "
        f"bare forward {b * 1e3:.0f} ms, run + top-5 maps at {size[0]}x{size[1]} "
        f"{c * 1e3:.0f} ms, ratio {c / b:.3f} (median of {args.repeats}"
        f"{', autocast ' + args.autocast if args.autocast else ''})"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"bench": "run + top-5 maps", "model": args.model, "batch": args.batch,
                       "device": str(net.device), "autocast": args.autocast,
                       "bare": b, "camviz": c, "unit": "s per batch", "ratio": c / b}, fh)


if __name__ == "__main__":
    main()
