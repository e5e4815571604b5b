"""Speed of new heads: the pooling pass against the bare forward, and the fit on cached features.

1. **Pooling pass** (``camviz.pool_features``, no cache) over N preprocessed images (the demo
   net at 128 px, efficientnet_lite0 at 224 px) against the bare ``model(x)`` over the same
   batches, in the same process, interleaved, median of ``--repeats``: throughput ratio = bare
   time / pooling time (target >= 0.9). The pass runs the network once per batch through
   ``GapNet.run`` (feature hook, exactness check, pooling) and batches the items with camviz's
   collate, as ``camviz fit-head`` does.
2. **Fit** (``camviz.fit_linear``) on 10,000 feature vectors of 1280 dimensions (the size of
   EfficientNet-B0 / Lite0 features) in memory, as they come from the feature cache: class
   means plus noise (overlapping classes), non-negative like pooled ReLU features; softmax and
   SVM heads, 10 and 100 classes, the default L2 grid (5 strengths fitted on 80%, then the
   chosen one on all). Beside each fit, one evaluation of a head's loss and gradient on all
   10,000 vectors (the step L-BFGS repeats), timed in the same run: the fit's time in those
   units does not depend on how busy the machine is.

The machine may be shared: the load average is printed with the numbers; ``--clock cpu`` times
the pooling pass in process CPU time.

    python benchmarks/bench_heads.py [--threads 2] [--repeats 5] [--fit-repeats 3] [--json out.json]
    python benchmarks/bench_heads.py --models '' --classes 100 --fit-repeats 1   # one part
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

import camviz
from camviz.heads import pool_features
from camviz.linearfit import fit_linear


def bench_pooling(name: str, size: int, n: int, batch: int, repeats: int,
                  clock=time.perf_counter) -> dict:
    torch.manual_seed(0)
    net = camviz.load_model(name, device="cpu")  # both ship their weights (no download)
    data = [torch.randn(3, size, size) for _ in range(n)]
    batches = [torch.stack(data[i : i + batch]) for i in range(0, n, batch)]
    model = net.model.eval()

    def bare() -> float:
        t = clock()
        with torch.inference_mode():
            for x in batches:
                model(x)
        return clock() - t

    def pooled() -> float:
        t = clock()
        pool_features(net, data, batch_size=batch, cache=False, progress=False)
        return clock() - t

    bare(), pooled()  # warm-up
    tb, tp = [], []
    for _ in range(repeats):
        tb.append(bare())
        tp.append(pooled())
    mb, mp = statistics.median(tb), statistics.median(tp)
    return {"model": name, "units": net.num_units, "input": size, "images": n, "batch": batch,
            "bare_s": round(mb, 3), "pooling_s": round(mp, 3),
            "throughput_ratio": round(mb / mp, 3)}


def bench_fit(n: int, k: int, classes: int, loss: str, repeats: int,
              spread: float = 0.05) -> dict:
    g = torch.Generator().manual_seed(classes)
    # spread 0.05: overlapping classes; 0.3: well separated
    means = 0.5 + spread * torch.randn(classes, k, generator=g)
    y = torch.arange(n) % classes
    x = (means[y] + torch.randn(n, k, generator=g)).clamp_min(0)
    w = torch.zeros(classes, k, requires_grad=True)

    def one_evaluation() -> float:  # what L-BFGS repeats: the loss of a head and its gradient
        t = time.perf_counter()
        w.grad = None
        torch.nn.functional.cross_entropy(x @ w.T, y).backward()
        return time.perf_counter() - t

    times, evals, fit = [], [], None
    for _ in range(repeats):
        evals.append(statistics.median(one_evaluation() for _ in range(5)))
        t = time.perf_counter()
        fit = fit_linear(x, y, classes, loss=loss)
        times.append(time.perf_counter() - t)
    sec, ev = statistics.median(times), statistics.median(evals)
    return {"n": n, "dim": k, "classes": classes, "loss": loss, "spread": spread,
            "seconds": round(sec, 2),
            "one_evaluation_ms": round(1000 * ev, 1), "in_evaluations": round(sec / ev),
            "l2": fit.l2, "holdout_accuracy": round(fit.holdout_accuracy, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--fit-repeats", type=int, default=3)
    p.add_argument("--models", default="demo,efficientnet_lite0",
                   help="networks of the pooling pass (empty: skip it)")
    p.add_argument("--classes", default="10,100", help="head sizes of the fit (empty: skip it)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: the pooling pass in process CPU time (a shared machine's wall "
                   "clock also counts the other jobs' time)")
    p.add_argument("--spread", type=float, default=0.05,
                   help="std of the class means of the fit's features (0.05 overlapping, "
                   "0.3 well separated)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    clock = time.perf_counter if a.clock == "wall" else time.process_time
    torch.set_num_threads(a.threads)
    out = {"threads": a.threads, "clock": a.clock,
           "load_before": [round(v, 1) for v in os.getloadavg()]}
    out["pooling"], out["fit"] = [], []
    sizes = {"demo": (128, 128, 32), "efficientnet_lite0": (224, 64, 32)}
    for name in filter(None, a.models.split(",")):
        out["pooling"].append(bench_pooling(name, *sizes.get(name, (224, 64, 32)), a.repeats,
                                            clock))
        print(out["pooling"][-1], file=sys.stderr, flush=True)
    for c in (int(v) for v in filter(None, a.classes.split(","))):
        for loss in ("softmax", "svm"):
            out["fit"].append(bench_fit(10000, 1280, c, loss, a.fit_repeats, a.spread))
            print(out["fit"][-1], file=sys.stderr, flush=True)
    out["load_after"] = [round(v, 1) for v in os.getloadavg()]
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
