"""Sharded scans: throughput of 1 and 2 processes (one thread each), the merge against the scan,
and the memory of one rank at 1x and 4x the images.

Every process is a fresh interpreter with OMP_NUM_THREADS=1 and torch.set_num_threads(1),
scanning the demo net over the same demo-world images (``demo:test:N``, generated once into the
cache). With 2 processes they form a gloo group on 127.0.0.1 and each scans its shard of
``camviz.scan``'s batch-aligned split. Per run and rank it records: the wall time and the CPU
time (``time.process_time``, which other jobs on a shared machine do not inflate) of the whole
``camviz.scan`` call (the process group already up, the model loaded), and, separately, the time
of merging the rank's shard state exactly as ``scan`` does (``merge_on_all`` over npz bytes).
Medians over ``--runs`` runs.

    .venv/bin/python benchmarks/bench_distributed.py [--images 480] [--runs 3] [--json out.json]

Targets (issue 15): 2 processes >= 1.8x the images/s of one; merge < 2% of the scan. On a
machine whose cores are busy with other work the wall-clock speedup says little: the CPU
seconds per image per rank (1 vs 2 processes) then give the per-rank overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout


def worker(rank: int, world: int, port: str, n: int, out: str, batch: int) -> None:
    import torch
    import torch.distributed as dist

    import camviz
    from camviz.distributed import merge_on_all, pack, shard, unpack
    from camviz.unitstats import from_state_arrays, state_arrays

    torch.set_num_threads(1)
    net = camviz.load_model("demo", device="cpu")
    data = camviz.PartsFolder(camviz.ensure_split("test", n, progress=False),
                              transform=net.transform)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        dist.init_process_group("gloo", rank=rank, world_size=world,
                                timeout=timedelta(seconds=600))
        dist.barrier()
    t, c = time.perf_counter(), time.process_time()
    stats = camviz.scan(net, data, batch_size=batch, cache=False, progress=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    # the rank's pass alone (its shard, no group), then the merge alone, as scan does it
    items = shard(n, batch, rank, world)
    c0 = time.process_time()
    mine = camviz.scan(net, torch.utils.data.Subset(data, items), batch_size=batch,
                       cache=False, progress=False, distributed=False)
    shard_cpu = (time.process_time() - c0) / max(len(items), 1)
    if world > 1:
        dist.barrier()
    t, c = time.perf_counter(), time.process_time()
    merge_on_all(mine, lambda s: pack(state_arrays(s)),
                 lambda b: from_state_arrays(unpack(b)), lambda a, b: a.merge(b))
    merge, merge_cpu = time.perf_counter() - t, time.process_time() - c
    state_bytes = len(pack(state_arrays(mine)))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB
    Path(out).write_text(json.dumps({"rank": rank, "wall": wall, "cpu": cpu, "merge": merge,
                                     "merge_cpu": merge_cpu, "shard_cpu": shard_cpu,
                                     "samples": stats.quantiles.num_samples,
                                     "images": stats.num_images, "state_bytes": state_bytes,
                                     "rss": rss}))
    if world > 1:
        dist.destroy_process_group()


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(world: int, n: int, batch: int) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    port = _port()
    with tempfile.TemporaryDirectory() as tmp:
        outs = [os.path.join(tmp, f"r{r}.json") for r in range(world)]
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(r), str(world), port,
                                   str(n), outs[r], str(batch)], env=env) for r in range(world)]
        for p in procs:
            if p.wait(timeout=3600):
                raise SystemExit(f"a worker failed (exit {p.returncode})")
        return [json.loads(Path(o).read_text()) for o in outs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=480)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        r, w, port, n, out, batch = args.worker
        worker(int(r), int(w), port, int(n), out, int(batch))
        return
    import camviz

    camviz.ensure_split("test", args.images, progress=False)  # generated once, outside timing
    camviz.ensure_split("test", args.images // 4, progress=False)
    n, b = args.images, args.batch_size
    runs = {1: [], 2: []}
    for _ in range(args.runs):  # alternate, so that load changes hit both alike
        for world in (1, 2):
            runs[world].append(launch(world, n, b))
    rows = {}
    for world, rs in runs.items():
        wall = statistics.median(max(x["wall"] for x in r) for r in rs)  # the slowest rank
        cpu = statistics.median(statistics.mean(x["cpu"] / x["images"] * world for x in r)
                                for r in rs)
        merge = statistics.median(max(x["merge"] for x in r) for r in rs)
        merge_cpu = statistics.median(max(x["merge_cpu"] for x in r) for r in rs)
        scan_cpu = statistics.median(max(x["cpu"] for x in r) for r in rs)
        shard_cpu = statistics.median(statistics.mean(x["shard_cpu"] for x in r) for r in rs)
        rows[world] = {"wall_s": wall, "images_per_s": n / wall, "cpu_s_per_image_rank": cpu,
                       "merge_s": merge, "merge_share": merge / wall, "merge_cpu_s": merge_cpu,
                       "merge_cpu_share": merge_cpu / scan_cpu, "pass_cpu_per_image": shard_cpu,
                       "state_mb": rs[0][0]["state_bytes"] / 2**20}
    rows[2]["speedup"] = rows[2]["images_per_s"] / rows[1]["images_per_s"]
    rows[2]["cpu_overhead_per_rank"] = rows[2]["cpu_s_per_image_rank"] / rows[1][
        "cpu_s_per_image_rank"] - 1
    mem = {f"{m}x": launch(1, n // 4 * m, b)[0] for m in (1, 4)}
    print(f"demo net, demo:test:{n}, batch {b}, one thread per process, median of {args.runs}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("| processes | wall s | images/s | speedup | CPU / image / rank | merge wall | "
          "merge / scan wall | merge CPU | merge / scan CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for world, r in rows.items():
        print(f"| {world} | {r['wall_s']:.2f} | {r['images_per_s']:.1f} | "
              f"{r.get('speedup', 1.0):.2f}x | {r['cpu_s_per_image_rank'] * 1e3:.1f} ms | "
              f"{r['merge_s'] * 1e3:.0f} ms | {r['merge_share'] * 100:.2f}% | "
              f"{r['merge_cpu_s'] * 1e3:.0f} ms | {r['merge_cpu_share'] * 100:.2f}% |")
    print(f"CPU per image of a rank of 2 vs 1 process: {rows[2]['cpu_overhead_per_rank']:+.1%}; "
          f"state exchanged per rank {rows[2]['state_mb']:.1f} MB")
    p1, p2 = rows[1]["pass_cpu_per_image"], rows[2]["pass_cpu_per_image"]
    extra = (rows[2]["cpu_s_per_image_rank"] - p2) * n / 2
    print(f"the pass alone (a rank's shard without the group): {p2 * 1e3:.2f} ms CPU per image "
          f"with 2 processes running, {p1 * 1e3:.2f} ms with 1 ({p2 / p1 - 1:+.1%}); the rest of "
          f"a rank's CPU (fingerprints, agreement, merge, waiting for the other rank): "
          f"{extra * 1e3:.0f} ms per rank")
    for m, r in mem.items():
        print(f"one process, {m} ({r['images']} images): peak RSS {r['rss'] / 2**20:.0f} MiB, "
              f"state {r['state_bytes'] / 2**20:.1f} MB, {r['samples']} sketch samples per unit "
              f"(bound {3 * 8192 + 8 * 40})")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "memory": mem}, indent=1))


if __name__ == "__main__":
    main()
