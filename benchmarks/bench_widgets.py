"""Benchmark: server-side latency of the JupyterLab browser (camviz.widgets.Browser).

Runs inside a real IPython kernel (jupyter_client), so every widget change is serialised and
sent on the kernel's sockets as in JupyterLab (no page receives it: the browser's own drawing
is measured by tests/test_browser.py). Network: resnet50 with random weights (2048 x 7 x 7
features) on 224 x 224 inputs. Medians of several runs, interleaved with the baseline.

Targets (issue 6): threshold or opacity change <= 30 ms, class change <= 50 ms, a new image =
one forward pass + <= 50 ms (each new image's time minus its own ``net.run``, timed inside the
same call; a bare ``net.run`` of another input is timed alongside for reference).

    .venv/bin/python benchmarks/bench_widgets.py [--model resnet50] [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from jupyter_client.manager import start_new_kernel

KERNEL_CODE = """
import json, statistics, time
import torch, camviz
from IPython.display import display
from camviz.widgets import Browser

torch.manual_seed(0)
net = camviz.load_model({model!r}, weights=None, device="cpu")
R = {repeats}
imgs = torch.randn(R + 2, 3, 224, 224)
b = Browser(net, imgs, units=6)
display(b)

def med(xs):
    return statistics.median(xs) * 1e3

def timed(fn):
    t0 = time.perf_counter(); fn(); return time.perf_counter() - t0

times = {{k: [] for k in ("threshold", "opacity", "cmap", "class_topk", "class_by_name",
                          "unit_order", "new_image", "new_image_minus_forward",
                          "bare_run")}}
names = [c for c in net.classes]
for i in range(R):
    times["threshold"].append(timed(lambda: setattr(b.threshold, "value", 0.15 + 0.07 * i)))
    times["opacity"].append(timed(lambda: setattr(b.opacity, "value", 0.2 + 0.07 * i)))
    opts = [v for _, v in b.class_picker.options]
    times["class_topk"].append(timed(lambda: setattr(b.class_picker, "value",
                                                     opts[1 + i % (len(opts) - 1)])))
    times["class_by_name"].append(timed(lambda: b.select_class(names[(37 * i + 11) % 1000])))
    times["unit_order"].append(timed(lambda: setattr(
        b.unit_order, "value", "contribution" if b.unit_order.value == "weight" else "weight")))
    times["cmap"].append(timed(lambda: setattr(b.cmap, "value",
                                               "viridis" if b.cmap.value == "jet" else "jet")))
    x = imgs[i + 2 : i + 3]
    times["bare_run"].append(timed(lambda: net.run(x)))
    t_new = timed(lambda: setattr(b.image_picker, "value", i + 1))
    times["new_image"].append(t_new)
    # paired: the same call's own forward pass (net.run) subtracted
    times["new_image_minus_forward"].append(t_new - b.last_forward_ms / 1e3)
out = {{k: med(v) for k, v in times.items()}}
out["forward_passes"] = b.forward_passes
out["images_shown"] = R + 1
out["threads"] = torch.get_num_threads()
print("CAMVIZ_BENCH " + json.dumps(out))
"""

TARGETS = {"threshold": 30.0, "opacity": 30.0, "class_topk": 50.0, "class_by_name": 50.0,
           "new_image_minus_forward": 50.0}


def run_in_kernel(code: str, timeout: float = 600.0) -> dict[str, float]:
    km, kc = start_new_kernel(kernel_name="python3")
    lines: list[str] = []

    def on_output(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            lines.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            lines.append("\n".join(msg["content"]["traceback"]))

    try:
        reply = kc.execute_interactive(code, timeout=timeout, output_hook=on_output)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    text = "".join(lines)
    if reply["content"]["status"] != "ok":
        raise SystemExit(f"benchmark failed in the kernel:\n{text}")
    for line in text.splitlines():
        if line.startswith("CAMVIZ_BENCH "):
            return json.loads(line[len("CAMVIZ_BENCH "):])
    raise SystemExit(f"no result from the kernel:\n{text}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    res = run_in_kernel(textwrap.dedent(KERNEL_CODE.format(model=args.model,
                                                           repeats=args.repeats)))
    print(f"camviz Browser, {args.model} random weights, 224x224, CPU "
          f"({res['threads']} torch threads for the forward, 1 for redraws), "
          f"median of {args.repeats}, server side in a kernel:")
    ok = True
    for key, ms in res.items():
        if key in ("forward_passes", "images_shown", "threads"):
            continue
        target = TARGETS.get(key)
        mark = "" if target is None else (" ok" if ms <= target else " OVER")
        ok &= target is None or ms <= target
        limit = "" if target is None else f"  (target <= {target:.0f} ms)"
        print(f"  {key:>24}: {ms:8.1f} ms{limit}{mark}")
    print(f"  forward passes: {res['forward_passes']} for {res['images_shown']} images shown")
    if res["forward_passes"] != res["images_shown"]:
        ok = False
        print("  OVER: the network ran for something other than a new image")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
