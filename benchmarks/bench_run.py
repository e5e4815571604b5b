"""Benchmark: GapNet.run plus top-5 maps upsampled to the input, against the bare model(x).

Same process, same batch, interleaved runs, medians. Target: ratio <= 1.05 for resnet50 at
batch 16 on the CPU.

    .venv/bin/python benchmarks/bench_run.py [--model resnet50] [--batch 16] [--repeats 7]
"""

from __future__ import annotations

import argparse
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
    args = ap.parse_args()

    net = camviz.load_model(args.model, weights=None, device=args.device)
    model = net.model
    size = net.transform.crop
    x = torch.randn(args.batch, 3, *size, device=net.device)

    def sync() -> None:
        if net.device.type == "cuda":
            torch.cuda.synchronize()

    def bare() -> None:
        with torch.inference_mode():
            model(x)
        sync()

    def camviz_run() -> None:
        res = net.run(x)
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
        f"{c * 1e3:.0f} ms, ratio {c / b:.3f} (median of {args.repeats})"
    )


if __name__ == "__main__":
    main()
