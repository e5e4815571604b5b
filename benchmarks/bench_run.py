"""Benchmark: GapNet.run plus the top-5 maps upsampled to the input and normalised, against the
bare model(x) and against torchcam's CAM for the same five classes (upsampled and normalised the
same way: bilinear, then per-map min-max).

One process, one batch per model, the three ways interleaved in a random order each round,
medians of the times and of each round's ratios (a round's three runs see about the same load
on a shared machine). ``--clock cpu`` times the process's CPU time instead of the wall clock:
on a machine shared with other jobs, the wall clock also counts the time the others hold the
cores. Targets: <= 1.02x the bare forward and no slower than torchcam, on every model.

    .venv/bin/python benchmarks/bench_run.py [--models resnet18 resnet50 efficientnet_lite0]
        [--batch 16] [--repeats 7] [--device auto] [--autocast bf16] [--json out.json]

With ``--autocast`` every way runs under that autocast (camviz's pass with ``autocast=``).
``--json`` also writes the numbers of the last model (for benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import camviz
from camviz.maps import min_max

# where torchcam reads the features (the module whose output is F) and the final Linear
TORCHCAM_LAYERS = {
    "resnet18": ("layer4", "fc"),
    "resnet50": ("layer4", "fc"),
    "efficientnet_lite0": ("bn2", "classifier"),
}


def load(name: str, device: str) -> camviz.GapNet:
    weights = "DEFAULT" if name.startswith("efficientnet_lite") else None
    return camviz.load_model(name, weights=weights, device=device)


def ways(net: camviz.GapNet, name: str, x: torch.Tensor,
         autocast: str | None = None) -> dict[str, Callable[[], None]]:
    from torchcam.methods import CAM

    model = net.model.eval()
    size = tuple(x.shape[-2:])

    def sync() -> None:
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(autocast or "")

    def amp() -> contextlib.AbstractContextManager:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=x.device.type, dtype=dtype)

    def bare() -> None:
        with torch.inference_mode(), amp():
            model(x)
        sync()

    def camviz_run() -> None:
        res = net.run(x, autocast=autocast)
        res.cams(res.topk(5).indices, size="input", normalize=True)
        sync()

    kept = net.run(x, autocast=autocast)

    def maps_only() -> None:  # camviz's own work after the pass: top-5, maps, upsampling
        kept.cams(kept.topk(5).indices, size="input", normalize=True)
        sync()

    layer, fc = TORCHCAM_LAYERS[name]
    extractor = CAM(model, target_layer=layer, fc_layer=fc, input_shape=(3, *size))

    def torchcam() -> None:
        with torch.no_grad(), amp():
            scores = model(x)
            top = scores.topk(5, dim=1).indices
            maps = torch.stack(
                [extractor(top[:, j].tolist(), scores, normalized=False)[0] for j in range(5)],
                dim=1,
            )
            min_max(F.interpolate(maps, size=size, mode="bilinear", align_corners=False))
        sync()

    return {"bare": bare, "camviz": camviz_run, "torchcam": torchcam, "maps": maps_only}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=list(TORCHCAM_LAYERS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--autocast", choices=["bf16", "fp16"], default=None)
    ap.add_argument("--json", default=None, help="also write the last model's numbers here")
    args = ap.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    print(f"batch {args.batch}, {torch.get_num_threads()} threads, {args.clock} clock, "
          f"median of {args.repeats}")
    print("| model | input | bare forward | run + top-5 maps | torchcam CAM + top-5 maps "
          "| run / bare | run / torchcam | top-5 maps alone / bare |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        net = load(name, args.device)
        size = net.transform.crop
        x = torch.randn(args.batch, 3, *size, generator=torch.Generator().manual_seed(0))
        x = x.to(net.device)
        fns = ways(net, name, x, args.autocast)
        for fn in fns.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.repeats):
            order = list(fns)
            rng.shuffle(order)
            for k in order:
                t0 = clock()
                fns[k]()
                times[k].append(clock() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        vs_bare = statistics.median(c / b for c, b in zip(times["camviz"], times["bare"]))
        vs_cam = statistics.median(c / t for c, t in zip(times["camviz"], times["torchcam"]))
        print(f"| {name} | {size[0]}x{size[1]} | {med['bare'] * 1e3:.0f} ms "
              f"| {med['camviz'] * 1e3:.0f} ms | {med['torchcam'] * 1e3:.0f} ms "
              f"| {vs_bare:.3f} | {vs_cam:.3f} | {med['maps'] / med['bare']:.4f} |", flush=True)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"bench": "run + top-5 maps", "model": name, "batch": args.batch,
                           "device": str(net.device), "autocast": args.autocast,
                           "bare": med["bare"], "camviz": med["camviz"],
                           "torchcam": med["torchcam"], "unit": "s per batch",
                           "ratio": vs_bare}, fh)


if __name__ == "__main__":
    main()
