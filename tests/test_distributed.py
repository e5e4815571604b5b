"""Scale-out (issue 15): two gloo processes on the CPU give the same answer as one process on
the demo world; a rank that fails stops every rank with a clear error instead of a hang."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import camviz
from camviz.distributed import shard
from camviz.unitstats import from_state_arrays

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "data" / "demo-fixture"
WORKER = Path(__file__).with_name("dist_worker.py")
BATCH = 6  # as in dist_worker.py: 32 items are 6 batches, rank 0 gets 3 (18 items), rank 1 14


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _ranks(case: str, out: Path, timeout: float = 600, dist_timeout: str = "60"):
    """Start both ranks of ``case``; wait for rank 0 (at most ``timeout`` s), then for rank 1
    briefly and kill it if it is still there (a hung rank). Returns the exit codes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "CAMVIZ_DIST_TIMEOUT": dist_timeout}
    port = _port()
    procs = [subprocess.Popen([sys.executable, str(WORKER), case, str(r), "2", port, str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for r in range(2)]
    codes = []
    try:
        for i, p in enumerate(procs):
            try:
                p.wait(timeout=timeout if i == 0 else 10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            codes.append(p.returncode)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
    return codes


def test_shards_are_disjoint_whole_batches_covering_everything():
    for n in (0, 1, 5, 32, 33, 100):
        for size in (1, 2, 3, 5):
            parts = [shard(n, BATCH, r, size) for r in range(size)]
            items = [i for p in parts for i in p]
            assert items == list(range(n))  # disjoint, in order, nothing repeated or padded
            assert all(p.start % BATCH == 0 for p in parts if len(p))
            sizes = [len(p) for p in parts]
            assert max(sizes) - min(sizes) <= BATCH


def _rank_interval(sorted_cells: torch.Tensor, values: torch.Tensor) -> tuple:
    n = sorted_cells.shape[1]
    lo = torch.searchsorted(sorted_cells, values[:, None].contiguous(), side="left")[:, 0]
    hi = torch.searchsorted(sorted_cells, values[:, None].contiguous(), side="right")[:, 0]
    return lo.double() / n, hi.double() / n


@pytest.mark.slow
def test_two_processes_give_the_answer_of_one(tmp_path):
    codes = _ranks("all", tmp_path)
    assert codes == [0, 0], [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)
                             if (tmp_path / f"rank{r}.txt").exists()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks' numerics (one thread each)
    try:
        net = camviz.load_model("demo", device="cpu")
        parts = camviz.PartsFolder(FIXTURE, transform=net.transform)
        one = camviz.scan(net, parts, batch_size=BATCH, cache=False, progress=False)
        scores = camviz.evaluate(net, camviz.WsolMetadata(FIXTURE), batch_size=BATCH,
                                 progress=False)
        with np.load(tmp_path / "stats.npz", allow_pickle=False) as z:
            two = from_state_arrays({k: z[k] for k in z.files})
        # with the same thresholds (the ranks' merged sketch), dissection counts pixels
        d = camviz.dissect(net, parts, two, batch_size=BATCH, progress=False)
        feats = torch.cat([net.run(torch.stack([parts[i]["image"] for i in range(j, j + 8)]))
                           .features for j in range(0, 32, 8)])
    finally:
        torch.set_num_threads(threads)
    # top-k: the same images (global indices) and scores; counts exact; sums to addition order
    assert torch.equal(two.top.indices, one.top.indices)
    assert torch.equal(two.top.values, one.top.values)
    assert two.num_images == one.num_images == 32 and two.meta["ranks"] == 2
    for name in ("label_count", "pred_count"):
        assert torch.equal(getattr(two, name), getattr(one, name))
    for name in ("pooled_sum", "label_sum", "pred_sum"):
        assert torch.allclose(getattr(two, name), getattr(one, name), rtol=1e-12, atol=1e-12)
    # quantiles: each answer's true rank lies within its sketch's rank-error bound
    k = feats.shape[1]
    cells = feats.transpose(0, 1).reshape(k, -1).sort(dim=1).values
    assert cells.shape[1] == two.quantiles.count == 32 * 32 * 32  # > resolution: compacted
    for q in (0.5, 0.9, 0.995):
        for sk in (one, two):
            bound = sk.quantiles.rank_error_bound()
            assert 0 < bound < 0.01
            lo, hi = _rank_interval(cells, sk.thresholds(q))
            assert bool(((lo <= q + bound + 1e-9) & (q - bound - 1e-9 <= hi)).all())
        lo1, hi1 = _rank_interval(cells, one.thresholds(q))
        lo2, hi2 = _rank_interval(cells, two.thresholds(q))
        gap = one.quantiles.rank_error_bound() + two.quantiles.rank_error_bound()
        assert bool(((lo2 <= hi1 + gap) & (lo1 <= hi2 + gap)).all())
    # evaluation: every number identical (counts and histograms, exact fractions)
    got = json.loads((tmp_path / "eval.json").read_text())
    want = json.loads(json.dumps(scores))
    got.pop("seconds"), want.pop("seconds")
    assert got == want and got["images"] == 32
    # dissection (at the merged thresholds): pixel counts, identical
    with np.load(tmp_path / "dissect.npz", allow_pickle=False) as z:
        assert z["parts"].tolist() == d.parts
        assert np.array_equal(z["inter"], d.intersection.numpy())
        assert np.array_equal(z["union"], d.union.numpy())


def _said(out: Path, rank: int) -> str:
    f = out / f"rank{rank}.txt"
    return f.read_text() if f.exists() else ""


@pytest.mark.slow
def test_a_rank_that_raises_stops_every_rank_with_its_error(tmp_path):
    assert _ranks("raise", tmp_path) == [1, 1]
    assert _said(tmp_path, 1) == "RuntimeError: the disk went away"
    assert _said(tmp_path, 0) == (
        "CamvizError: camviz scan: rank 1 of 2 failed (RuntimeError: the disk went away); every "
        "rank stops. Fix it and rerun the same command: checkpoints written so far are kept")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["die", "hang"])
def test_a_rank_that_dies_or_hangs_fails_the_job_after_the_timeout(tmp_path, how):
    codes = _ranks(how, tmp_path, timeout=300, dist_timeout="20")
    assert codes[0] == 1
    said = _said(tmp_path, 0)
    assert said.startswith("CamvizError: lost contact with the other ranks (")
    assert said.endswith("one of them died or did not answer within 20 s "
                         "(CAMVIZ_DIST_TIMEOUT): see its own output")


@pytest.mark.slow
def test_torchrun_camviz_scan_writes_once_what_one_process_writes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"no torchrun beside {sys.executable}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "CAMVIZ_DIST_TIMEOUT": "120"}
    args = ["scan", "--model", "demo", "--data", str(FIXTURE), "--batch-size", str(BATCH),
            "--no-cache", "--no-progress"]
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m",
                          "camviz", *args, "--out", str(tmp_path / "two.npz")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("camviz scan: 32 images") == 1  # rank 0 prints, rank 1 does not
    one = subprocess.run([sys.executable, "-m", "camviz", *args, "--out",
                          str(tmp_path / "one.npz")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = (camviz.UnitStats.load(tmp_path / f) for f in ("one.npz", "two.npz"))
    assert torch.equal(a.top.indices, b.top.indices) and torch.equal(a.top.values, b.top.values)
    assert torch.equal(a.pred_count, b.pred_count) and b.meta["ranks"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npz", "two.npz"]


@pytest.mark.slow
def test_ranks_that_find_the_scan_in_the_cache_all_get_it(tmp_path):
    """Rank 0 reads the cache and gives the entry to every rank (rank 1 used to wait for a
    broadcast rank 0 never sent: the scan failed, a dissect hung)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"no torchrun beside {sys.executable}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "CAMVIZ_DIST_TIMEOUT": "60", "CAMVIZ_CACHE": str(tmp_path / "cache")}
    args = ["--model", "demo", "--data", str(FIXTURE), "--batch-size", str(BATCH), "--no-progress"]
    one = subprocess.run([sys.executable, "-m", "camviz", "scan", *args, "--out",
                          str(tmp_path / "one.npz")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    launch = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "camviz"]
    two = subprocess.run([*launch, "scan", *args, "--out", str(tmp_path / "two.npz")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = (camviz.UnitStats.load(tmp_path / f) for f in ("one.npz", "two.npz"))
    assert torch.equal(a.top.indices, b.top.indices) and b.meta == a.meta  # the cached entry
    d = subprocess.run([*launch, "dissect", *args, "--out", str(tmp_path / "d")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert d.returncode == 0, d.stderr[-2000:]
    assert (tmp_path / "d" / "dissection.json").is_file()


@pytest.mark.slow
def test_a_failing_rank_stops_the_others_at_the_next_heartbeat(tmp_path):
    assert _ranks("early", tmp_path) == [1, 1]
    assert _said(tmp_path, 1) == "RuntimeError: the disk went away"
    assert _said(tmp_path, 0).startswith(
        "CamvizError: camviz scan: rank 1 of 2 failed (RuntimeError: the disk went away); every "
        "rank stops.")
    # rank 0 has 8 batches of 2; it heard at the beat after rank 1's second batch, not at the end
    assert int((tmp_path / "reads0.txt").read_text()) <= 6
