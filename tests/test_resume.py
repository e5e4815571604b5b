"""Long passes resume (issue 15, and issue 16's kill test for `camviz scan`): a scan or an
evaluation killed and rerun with the same arguments resumes from its last checkpoint and gives
the very result of an uninterrupted run; a checkpoint of another model, dataset or number of
processes is refused; no temporary file is left behind."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import camviz
from camviz.errors import CamvizError
from camviz.files import TMP_PREFIX
from camviz.scan import scan
from camviz.unitstats import state_arrays

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "data" / "demo-fixture"


class Pictures(Dataset):
    """Seeded (3, 32, 32) tensors with labels; ``stop_at``: raise KeyboardInterrupt there (a
    Ctrl-C in the middle of the pass); ``reads`` counts the items read."""

    def __init__(self, n: int = 30, seed: int = 0, stop_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 32, 32, generator=g)
        self.y = torch.randint(0, 5, (n,), generator=g)
        self.stop_at, self.reads = stop_at, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if i == self.stop_at:
            raise KeyboardInterrupt
        self.reads += 1
        return self.x[i], self.y[i]

    @property
    def fingerprint(self) -> str:  # the interrupting copy is the same data
        return f"pictures-{len(self)}"


def _same(a, b) -> None:
    """Two UnitStats hold the same statistics: every array bit for bit, the same info."""
    sa, sb = state_arrays(a), state_arrays(b)
    assert sorted(sa) == sorted(sb)
    for k in sa:
        if k != "info":
            assert np.array_equal(sa[k], sb[k]), k
    ia, ib = json.loads(str(sa["info"])), json.loads(str(sb["info"]))
    for info in (ia, ib):
        for key in ("seconds", "created", "resumed"):
            info["meta"].pop(key)
    assert ia == ib


KW = {"batch_size": 4, "top_n": 3, "resolution": 16, "cache": False, "progress": False}


@pytest.mark.parametrize("stop_at", [1, 9, 22, 29])
def test_an_interrupted_scan_resumes_to_the_same_statistics(tiny_net, tmp_path, stop_at):
    whole = scan(tiny_net, Pictures(), **KW)
    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        scan(tiny_net, Pictures(stop_at=stop_at), checkpoint=ck, checkpoint_every=2, **KW)
    done = stop_at // 8 * 8  # a checkpoint every 2 batches of 4
    assert (ck / "scan-rank0-of-1.npz").is_file() == (done > 0)
    again = Pictures()
    resumed = scan(tiny_net, again, checkpoint=ck, checkpoint_every=2, **KW)
    assert again.reads == 30 - done and resumed.meta["resumed"] == done
    _same(resumed, whole)
    assert not ck.exists()  # removed once the scan is complete


def test_a_checkpoint_of_another_model_dataset_or_world_is_refused(tiny_net, tmp_path):
    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        scan(tiny_net, Pictures(stop_at=20), checkpoint=ck, checkpoint_every=1, **KW)
    path = ck / "scan-rank0-of-1.npz"
    other = camviz.GapNet(torch.nn.Conv2d(3, 12, 3, stride=4), torch.nn.Linear(12, 5),
                          classes=list("abcde"), device="cpu", transform=tiny_net.transform)
    with pytest.raises(CamvizError) as err:
        scan(other, Pictures(), checkpoint=ck, **KW)
    assert str(err.value).startswith(f"{path} is a checkpoint of another scan: its model is ")
    assert str(err.value).endswith(f"give another checkpoint folder, or remove {path} to "
                                   "start over")
    with pytest.raises(CamvizError, match="its dataset is"):
        scan(tiny_net, Pictures(n=31), checkpoint=ck, **KW)
    with pytest.raises(CamvizError, match="its settings is"):
        scan(tiny_net, Pictures(), checkpoint=ck, **{**KW, "top_n": 4})
    (ck / "scan-rank0-of-2.npz").write_bytes(b"")
    with pytest.raises(CamvizError, match="another number of processes"):
        scan(tiny_net, Pictures(), checkpoint=ck, **KW)
    (ck / "scan-rank0-of-2.npz").unlink()
    assert path.is_file()  # refused, never overwritten: the work done is still there
    done = scan(tiny_net, Pictures(), checkpoint=ck, checkpoint_every=1, **KW)
    assert done.meta["resumed"] == 20


def test_a_damaged_checkpoint_is_reported_and_started_over(tiny_net, tmp_path):
    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        scan(tiny_net, Pictures(stop_at=20), checkpoint=ck, checkpoint_every=1, **KW)
    f = ck / "scan-rank0-of-1.npz"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="damaged checkpoint .* starting this shard over"):
        st = scan(tiny_net, Pictures(), checkpoint=ck, **KW)
    assert st.meta["resumed"] == 0
    _same(st, scan(tiny_net, Pictures(), **KW))


@pytest.mark.slow
def test_an_interrupted_evaluation_resumes_to_the_same_scores(tmp_path, monkeypatch):
    import camviz.datasets.wsol as wsol

    net = camviz.load_model("demo", device="cpu")
    meta = camviz.WsolMetadata(FIXTURE)
    kw = {"batch_size": 4, "limit": 16, "progress": False}
    whole = camviz.evaluate(net, meta, **kw)
    calls = {"n": 0}
    real = wsol.load_image

    def stops(path, **kw):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return real(path, **kw)

    monkeypatch.setattr(wsol, "load_image", stops)
    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        camviz.evaluate(net, meta, checkpoint=ck, checkpoint_every=1, **kw)
    monkeypatch.setattr(wsol, "load_image", real)
    assert (ck / "eval-rank0-of-1.npz").is_file()
    again = camviz.evaluate(net, meta, checkpoint=ck, checkpoint_every=1, **kw)
    whole.pop("seconds"), again.pop("seconds")
    assert again == whole and not ck.exists()


# ------------------------------------------------------------------ `camviz scan`, killed


KILLER = """
import os, signal, sys
from camviz.cli import main

how, at = sys.argv[1], int(sys.argv[2])
sig = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "KILL": signal.SIGKILL}[how.split("@")[0]]
if how.endswith("@write"):  # killed in the middle of writing a checkpoint
    import camviz.checkpoints as ck
    real, count = ck.np.savez, [0]

    def savez(fh, **arrays):
        count[0] += 1
        if count[0] == at:
            fh.write(b"PK half a checkpoint")
            fh.flush()
            os.kill(os.getpid(), sig)
        return real(fh, **arrays)
    ck.np.savez = savez
else:  # killed while reading item `at` (the same dataset class: the same fingerprint)
    from camviz.datasets.folders import PartsFolder
    real = PartsFolder.__getitem__

    def getitem(self, i):
        if i == at:
            os.kill(os.getpid(), sig)
        return real(self, i)
    PartsFolder.__getitem__ = getitem
sys.exit(main(sys.argv[3:]))
"""


def _leftovers(*folders: Path) -> list[str]:
    return [p.name for f in folders if f.exists() for p in f.rglob(f"{TMP_PREFIX}*")]


@pytest.mark.slow
def test_camviz_scan_killed_at_random_points_resumes_to_the_same_statistics(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "CAMVIZ_CACHE": str(tmp_path / "cache")}
    args = ["scan", "--model", "demo", "--data", str(FIXTURE), "--device", "cpu",
            "--batch-size", "4", "--checkpoint-every", "1", "--no-progress", "--no-cache"]

    def camviz_scan(out: Path, *pre: str) -> subprocess.CompletedProcess:
        cmd = ([sys.executable, "-c", KILLER, *pre] if pre
               else [sys.executable, "-m", "camviz"])
        return subprocess.run([*cmd, *args, "--out", str(out)], env=env, capture_output=True,
                              text=True, timeout=600)

    ref = tmp_path / "ref" / "stats.npz"
    assert camviz_scan(ref).returncode == 0
    with np.load(ref, allow_pickle=False) as z:
        want = {k: z[k] for k in z.files}
    rng = random.Random(16)
    for how in ("INT", "TERM", "KILL", "KILL@write"):
        at = rng.randrange(2, 6) if how.endswith("@write") else rng.randrange(5, 31)
        out = tmp_path / how / "stats.npz"
        killed = camviz_scan(out, how, str(at))
        assert killed.returncode == {"INT": 130, "TERM": 130}.get(how, -9), killed.stderr
        assert not out.exists() and (out.parent / "stats.npz.partial").is_dir()
        # killed mid-write, the half-written temporary file is there until the rerun
        assert bool(_leftovers(out.parent)) == how.endswith("@write")
        rerun = camviz_scan(out)
        assert rerun.returncode == 0, rerun.stderr
        assert "resumed from a checkpoint" in rerun.stdout
        with np.load(out, allow_pickle=False) as z:
            got = {k: z[k] for k in z.files}
        for k in want:
            if k != "info":
                assert np.array_equal(got[k], want[k]), (how, k)
        gi, wi = json.loads(str(got["info"])), json.loads(str(want["info"]))
        for info in (gi, wi):
            for key in ("seconds", "created", "resumed"):
                info["meta"].pop(key)
        assert gi == wi
        assert not (out.parent / "stats.npz.partial").exists()
        assert _leftovers(out.parent, tmp_path / "cache") == []
