"""RunningQuantile: rank error, memory and update cost against resolution, vs an exact sort.

For each resolution, feeds N values per channel (three channels: uniform, lognormal sigma 2,
ReLU-sparse with ~90% exact zeros) in batches, then measures the rank error of quantiles at
0.5 .. 0.999 exactly (a second pass counts values below / at each answer), the samples kept per
channel and the update time; baseline: one torch.sort of all the data (what an exact answer
needs, memory N per channel).

    .venv/bin/python benchmarks/bench_stats.py [--n 10000000] [--batch 65536] [--seeds 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from camviz.stats import DEFAULT_RESOLUTION, RunningQuantile  # noqa: E402

LEVELS = torch.tensor([0.5, 0.9, 0.99, 0.995, 0.999])


def gen(g: torch.Generator, n: int) -> torch.Tensor:
    u = torch.rand(n, generator=g)
    heavy = torch.exp(2 * torch.randn(n, generator=g))
    relu = torch.relu(torch.randn(n, generator=g) - 1.3) * torch.exp(torch.randn(n, generator=g))
    return torch.stack([u, heavy, relu], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--resolutions", default=f"1024,2048,4096,{DEFAULT_RESOLUTION},16384")
    args = ap.parse_args()
    n, b = args.n, args.batch

    def chunks(seed: int):
        g = torch.Generator().manual_seed(seed)
        for i in range(0, n, b):
            yield gen(g, min(b, n - i))

    t = time.perf_counter()
    torch.sort(torch.cat(list(chunks(0))), dim=0)
    t_sort = time.perf_counter() - t
    print(f"{n:.0e} values x 3 channels, batches of {b}; exact sort of all: {t_sort:.2f} s, "
          f"{n * 4 / 1e6:.0f} MB per channel")
    print("resolution | samples/channel | kB/channel | update s | worst rank error at "
          + " / ".join(f"{q:g}" for q in LEVELS.tolist()))
    for res in [int(r) for r in args.resolutions.split(",")]:
        worst = torch.zeros(len(LEVELS), dtype=torch.float64)
        t_upd = 0.0
        for seed in range(args.seeds):
            rq = RunningQuantile(3, resolution=res, seed=seed)
            t = time.perf_counter()
            for x in chunks(seed):
                rq.update(x)
            t_upd += time.perf_counter() - t
            v = rq.quantile(LEVELS)
            lt = torch.zeros(v.shape, dtype=torch.int64)
            le = torch.zeros(v.shape, dtype=torch.int64)
            for x in chunks(seed):
                lt += (x[None] < v[:, None]).sum(1)
                le += (x[None] <= v[:, None]).sum(1)
            q = LEVELS[:, None].double()
            err = (lt / n - q).clamp(min=0) + (q - le / n).clamp(min=0)
            worst = torch.maximum(worst, err.max(1).values)
        print(f"{res:10d} | {rq.num_samples:15d} | {rq.num_samples * 4 / 1e3:10.1f} | "
              f"{t_upd / args.seeds:8.2f} | " + " / ".join(f"{e:.1e}" for e in worst.tolist()))


if __name__ == "__main__":
    main()
