"""One rank of the two-process tests in test_distributed.py (run as a script by the test).

    python tests/dist_worker.py CASE RANK WORLD PORT OUT_DIR

CASE "all": scan, evaluate and dissect the demo fixture with the bundled demo net through the
public API inside a gloo process group; rank 0 writes the results to OUT_DIR. CASE "raise",
"die", "hang": rank 1 fails in its dataset (an exception, os._exit, blocking forever); every
rank that returns writes what it raised to OUT_DIR/rank<R>.txt. CASE "early": batches of 2 and
a heartbeat every batch; rank 1 raises in its second batch, rank 0 writes how many items it
read to OUT_DIR/reads.txt.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import camviz
from camviz.unitstats import state_arrays

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "demo-fixture"
BATCH = 6


class Failing(torch.utils.data.Dataset):
    """The fixture's parts dataset, where rank 1's first item fails in the way asked."""

    def __init__(self, ds, how: str, rank: int) -> None:
        self.ds, self.how, self.rank, self.reads = ds, how, rank, 0

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        self.reads += 1
        if self.how == "early" and self.rank == 1 and self.reads == 3:
            raise RuntimeError("the disk went away")
        if self.rank == 1:
            if self.how == "raise":
                raise RuntimeError("the disk went away")  # not an item failure: the job fails
            if self.how == "die":
                os._exit(3)
            if self.how == "hang":
                threading.Event().wait()
        return self.ds[i]


def main() -> None:
    case, rank, world, port, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], \
        Path(sys.argv[5])
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    timeout = float(os.environ.get("CAMVIZ_DIST_TIMEOUT", "60"))
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout))
    net = camviz.load_model("demo", device="cpu")
    parts = camviz.PartsFolder(FIXTURE, transform=net.transform)
    try:
        if case == "all":
            stats = camviz.scan(net, parts, batch_size=BATCH, cache=False, progress=False)
            scores = camviz.evaluate(net, camviz.WsolMetadata(FIXTURE), batch_size=BATCH,
                                     progress=False)
            d = camviz.dissect(net, parts, stats, batch_size=BATCH, progress=False)
            if rank == 0:
                np.savez(out / "stats.npz", **state_arrays(stats))
                (out / "eval.json").write_text(json.dumps(scores))
                np.savez(out / "dissect.npz", inter=d.intersection.numpy(),
                         union=d.union.numpy(), parts=np.array(d.parts))
        elif case == "early":
            data = Failing(parts, case, rank)
            try:
                camviz.scan(net, data, batch_size=2, cache=False, progress=False,
                            checkpoint_every=1)
            finally:
                (out / f"reads{rank}.txt").write_text(str(data.reads))
        else:
            camviz.scan(net, Failing(parts, case, rank), batch_size=BATCH, cache=False,
                        progress=False)
        (out / f"rank{rank}.txt").write_text("ok")
    except Exception as err:  # noqa: BLE001 - the test reads what each rank raised
        (out / f"rank{rank}.txt").write_text(f"{type(err).__name__}: {err}")
        sys.exit(1)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
