"""Speed of the box metrics: one pass for all thresholds vs one threshold at a time, same run.

Maps are 224 x 224 CAM-like score maps (1-3 Gaussian blobs plus noise on a 7 x 7 grid,
bicubic upsampled, min-max normalised — what a ResNet-style GAP network gives), 100 CAM
thresholds (np.arange(0, 1, 0.01)), one ground-truth box each. Two paths of
``best_iou_curve``:

* ``naive``: the reference's way, the regions of every threshold labelled one at a time;
* ``fast`` (the default): one union-find pass over the pixels for all thresholds (numba).

Both must give identical curves; the script checks that before timing. Reports the
median of several repeats, wall-clock and process CPU time (the CPU time is the steadier
figure on a shared machine), and the time of the first call (numba compiling the kernel,
or loading it from its on-disk cache; ``--cold`` compiles into a fresh cache directory).

    .venv/bin/python benchmarks/bench_metrics.py [--maps 40] [--repeats 5] [--cold]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F


def cam_like(rng: np.random.Generator, size: int = 224, grid: int = 7) -> np.ndarray:
    yy, xx = np.mgrid[0:grid, 0:grid]
    f = np.zeros((grid, grid))
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0, grid - 1, 2)
        s = rng.uniform(0.7, 2.0)
        f += rng.uniform(0.5, 1.5) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    f += 0.05 * rng.standard_normal((grid, grid))
    up = F.interpolate(torch.from_numpy(f)[None, None], size=(size, size), mode="bicubic")
    m = up[0, 0].numpy()
    return (m - m.min()) / (m.max() - m.min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="compile into a fresh numba cache")
    args = ap.parse_args()
    tmp = None
    if args.cold:
        tmp = tempfile.TemporaryDirectory()
        os.environ["NUMBA_CACHE_DIR"] = tmp.name
    from camviz.metrics import best_iou_curve, default_cam_thresholds

    rng = np.random.default_rng(0)
    maps = [cam_like(rng) for _ in range(args.maps)]
    gts = []
    for _ in maps:
        (x0, x1), (y0, y1) = np.sort(rng.integers(0, 224, (2, 2)), axis=1).tolist()
        gts.append([[x0, y0, x1, y1]])
    ts = default_cam_thresholds()

    t0 = time.perf_counter()
    best_iou_curve(maps[0], gts[0], ts, True, "fast")
    first = time.perf_counter() - t0
    print(f"first call: {first:.2f} s (" + ("compile, fresh cache" if args.cold else
          "compile or cache load") + f"), load average {os.getloadavg()[0]:.2f}")
    methods = ("naive", "fast")
    for multi in (False, True):
        for m, g in zip(maps, gts, strict=True):  # identical numbers first
            ref = best_iou_curve(m, g, ts, multi, "naive")
            if not np.array_equal(best_iou_curve(m, g, ts, multi, "fast"), ref):
                raise SystemExit("fast and naive curves differ")
        wall, cpu = {}, {}
        for method in methods:
            runs, cruns = [], []
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                for m, g in zip(maps, gts, strict=True):
                    best_iou_curve(m, g, ts, multi, method)
                runs.append((time.perf_counter() - t0) / len(maps) * 1e3)
                cruns.append((time.process_time() - c0) / len(maps) * 1e3)
            wall[method], cpu[method] = statistics.median(runs), statistics.median(cruns)
        mode = "multi-contour (V2)" if multi else "single-contour (V1)"
        print(f"{mode}, {args.maps} maps 224x224, 100 thresholds, median of {args.repeats}:")
        for method in methods:
            print(
                f"  {method:5s} {wall[method]:7.2f} ms/map wall {cpu[method]:7.2f} ms/map CPU"
                f"   naive/{method} x{wall['naive'] / wall[method]:.1f} wall"
                f" x{cpu['naive'] / cpu[method]:.1f} CPU"
            )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
