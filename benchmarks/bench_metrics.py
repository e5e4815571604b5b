"""Speed of the box metrics: all thresholds at once vs one threshold at a time, same run.

Maps are 224 x 224 CAM-like score maps (1-3 Gaussian blobs plus noise on a 7 x 7 grid,
bicubic upsampled, min-max normalised — what a ResNet-style GAP network gives), 100 CAM
thresholds (np.arange(0, 1, 0.01)), one ground-truth box each. Both paths must give identical
curves; the script checks that before timing. Reports the median of several repeats.

    .venv/bin/python benchmarks/bench_metrics.py [--maps 40] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from camviz.metrics import best_iou_curve, default_cam_thresholds


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
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    maps = [cam_like(rng) for _ in range(args.maps)]
    gts = []
    for _ in maps:
        (x0, x1), (y0, y1) = np.sort(rng.integers(0, 224, (2, 2)), axis=1).tolist()
        gts.append([[x0, y0, x1, y1]])
    ts = default_cam_thresholds()
    for multi in (False, True):
        for m, g in zip(maps, gts, strict=True):  # identical numbers first
            a = best_iou_curve(m, g, ts, multi, "fast")
            if not np.array_equal(a, best_iou_curve(m, g, ts, multi, "naive")):
                raise SystemExit("fast and naive curves differ")
        res = {}
        for method in ("naive", "fast"):
            runs = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                for m, g in zip(maps, gts, strict=True):
                    best_iou_curve(m, g, ts, multi, method)
                runs.append((time.perf_counter() - t0) / len(maps) * 1e3)
            res[method] = statistics.median(runs)
        mode = "multi-contour (V2)" if multi else "single-contour (V1)"
        print(
            f"{mode}: naive {res['naive']:.2f} ms/map, fast {res['fast']:.2f} ms/map, "
            f"speed-up x{res['naive'] / res['fast']:.1f} "
            f"({args.maps} maps 224x224, 100 thresholds, median of {args.repeats})"
        )


if __name__ == "__main__":
    main()
