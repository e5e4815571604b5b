"""Train the demo world's fully connected baseline, convert it to GAP and fine-tune it.

    python -m camviz.demo.train_fc                   # the bundled recipe, into camviz/demo/weights/
    python -m camviz.demo.train_fc --images 256 --fc-steps 2 --gap-steps 2 --val 32 --out /tmp/w
                                                     # a quick smoke run

The CAM paper's VGGnet-GAP in small (see :mod:`camviz.demo.fcnet`): stage 1 trains
:class:`~camviz.demo.fcnet.FcNet` (conv blocks with max pooling, then three fully connected
layers) from scratch on class labels, 10 epochs of 100 steps of 32 at lr 3e-3; stage 2 converts
it with :func:`camviz.convert.to_gap` (the FC stack and the last max pooling dropped, conv 3 x 3
(256) -> ReLU -> GAP -> Linear added) and fine-tunes it with :func:`camviz.finetune.fine_tune`:
one epoch of the two new layers alone (the trunk frozen), then four of every layer, the new
ones at 10 x the trunk's lr of 1e-3. Both stages use :mod:`camviz.finetune`'s seeded loop
(AdamW, warm-up and cosine schedule, a checkpoint per epoch in OUT: an interrupted run resumes
where it stopped). 12,000 training images are drawn once into memory, as in
:mod:`camviz.demo.train`. Wall time, CPU time (this process and its drawing workers) and the
load average are written to OUT/demo_fc.json; on a shared machine run it with
``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads that spin while the cores are busy with other
jobs made each step several times slower here).

Example:
    >>> import tempfile
    >>> info = main(["--images", "16", "--batch", "8", "--fc-epochs", "1", "--gap-epochs", "1",
    ...              "--val", "8", "--workers", "0", "--out", tempfile.mkdtemp(),
    ...              "--no-progress"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes
from torch.utils.data import Dataset

from camviz import files
from camviz.convert import save_converted
from camviz.demo.fcnet import FC_FILE, GAP_FILE, GAP_WIDTH, FcNet, to_gap_demo
from camviz.demo.net import WEIGHTS_DIR, demo_transform
from camviz.demo.train import DemoImages, TrainingImages, normalise
from camviz.demo.world import CLASSES, WORLD_SEED, WORLD_VERSION
from camviz.finetune import Settings, fine_tune, train


class InMemory(Dataset):
    """(normalised image, label) items of a :class:`~camviz.demo.train.TrainingImages` pool.

    Example:
        >>> pool = TrainingImages(2, workers=0, progress=False)
        >>> x, y = InMemory(pool)[1]
        >>> x.shape, y == int(pool.labels[1])
        (torch.Size([3, 128, 128]), True)
    """

    def __init__(self, pool: TrainingImages) -> None:
        self.images, self.labels = pool.images, pool.labels
        self.root = f"demo-train-v{WORLD_VERSION}-seed{WORLD_SEED}-{len(self.labels)}"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return normalise(self.images[i : i + 1])[0].contiguous(), int(self.labels[i])


@torch.no_grad()
def top1(model: torch.nn.Module, split: str = "val", n: int = 1000, batch: int = 100) -> float:
    """Top-1 accuracy (%) of a module on the first ``n`` images of a demo split.

    Example:
        >>> 0 <= top1(FcNet().eval(), n=2) <= 100
        True
    """
    loader = torch.utils.data.DataLoader(DemoImages(split, n), batch_size=batch)
    model.eval()
    right = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return 100.0 * right / n


class _Clock:
    def __init__(self) -> None:
        self.wall, self.cpu, self.kids = time.perf_counter(), time.process_time(), os.times()

    def lap(self) -> dict[str, float]:
        k = os.times()
        kids = (k.children_user - self.kids.children_user
                + k.children_system - self.kids.children_system)
        out = {"wall_s": round(time.perf_counter() - self.wall, 1),
               "cpu_s": round(time.process_time() - self.cpu + kids, 1),
               "load_avg_1min": round(os.getloadavg()[0], 2)}
        self.__init__()
        return out


def _report(stage: str, ran: list[int]) -> Any:
    """Print each epoch's loss and accuracy; ``ran`` collects the epochs run in this process
    (a resumed run's times cover only those)."""
    t0 = time.process_time()

    def say(rec: dict[str, Any]) -> None:
        ran.append(int(rec["epoch"]))
        print(f"{stage} epoch {rec['epoch']}: loss {rec['loss']:.4f}, train accuracy "
              f"{rec['accuracy']:.1f}%, CPU {time.process_time() - t0:.0f} s", flush=True)

    return say


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m camviz.demo.train_fc",
                                description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=12000, help="training images held in memory")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--fc-epochs", type=int, default=10, help="stage 1: epochs of the FC net")
    p.add_argument("--fc-steps", type=int, default=100, help="stage 1: steps per epoch")
    p.add_argument("--fc-lr", type=float, default=3e-3)
    p.add_argument("--gap-epochs", type=int, default=5, help="stage 2: epochs after to_gap")
    p.add_argument("--gap-steps", type=int, default=100, help="stage 2: steps per epoch")
    p.add_argument("--gap-freeze", type=int, default=1,
                   help="stage 2: first epochs that train the new layers only")
    p.add_argument("--gap-lr", type=float, default=1e-3)
    p.add_argument("--new-lr-mult", type=float, default=10.0,
                   help="learning rate of the new conv and linear layers relative to the rest")
    p.add_argument("--width", type=int, default=GAP_WIDTH, help="units of the new conv layer")
    p.add_argument("--autocast", choices=["none", "bf16"], default="none",
                   help="bf16 helps only on CPUs with bf16 units (AMX, AVX512-BF16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val", type=int, default=1000, help="val images to report top-1 on")
    p.add_argument("--workers", type=int, default=2, help="processes drawing the images")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=None, help="folder for the weights (default: the package's)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m camviz.demo.train_fc [--out DIR] ...`` (see the module doc).

    Returns what it writes to OUT/demo_fc.json.
    """
    a = _parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    np.seterr(all="ignore")
    out = Path(a.out) if a.out else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    prog, auto = not a.no_progress, None if a.autocast == "none" else a.autocast
    load0 = round(os.getloadavg()[0], 2)
    clock, times, ran1, ran2 = _Clock(), {}, [], []
    data = InMemory(TrainingImages(a.images, workers=a.workers, progress=prog))
    times["draw"] = clock.lap()

    torch.manual_seed(a.seed)
    fc = FcNet()
    s1 = Settings(epochs=a.fc_epochs, lr=a.fc_lr, batch_size=a.batch, weight_decay=5e-4,
                  new_lr_mult=1.0, autocast=auto, seed=a.seed, steps_per_epoch=a.fc_steps)
    h1 = train(fc, data, s1, new_layers=(), checkpoint=out / "fc.ckpt", device="cpu",
               progress=prog, callback=_report("stage 1", ran1))
    times["stage1_fc"] = clock.lap()

    torch.manual_seed(a.seed + 1)  # the new layers' initial weights
    gap = to_gap_demo(fc, width=a.width)
    s2 = Settings(epochs=a.gap_epochs, lr=a.gap_lr, batch_size=a.batch, weight_decay=5e-4,
                  new_lr_mult=a.new_lr_mult, autocast=auto, seed=a.seed + 1,
                  steps_per_epoch=a.gap_steps, freeze_epochs=a.gap_freeze)
    net = fine_tune(gap, data, **asdict(s2), checkpoint=out / "gap.ckpt", device="cpu",
                    classes=list(CLASSES), transform=demo_transform(), progress=prog,
                    callback=_report("stage 2", ran2))
    times["stage2_gap"] = clock.lap()
    total = {k: round(times["stage1_fc"][k] + times["stage2_gap"][k], 1)
             for k in ("wall_s", "cpu_s")}
    acc = {"demo-fc": top1(fc, n=a.val), "demo-fc-gap": top1(net.model, n=a.val)} if a.val else {}
    times["eval"] = clock.lap()
    info = {
        "world_version": WORLD_VERSION, "world_seed": WORLD_SEED, "classes": list(CLASSES),
        "train_images": a.images, "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_avg_at_start": load0,
        "stage1_fc": {"settings": asdict(s1), "config": fc.config, "history": h1},
        "stage2_gap": {"settings": asdict(s2), "width": a.width,
                       "new_layers": list(gap.new_layers), "history": net.history},
        "times": times, "train_and_fine_tune": total,
        "epochs_run_in_this_process": {"stage1_fc": ran1, "stage2_gap": ran2},
        "val_images": a.val, "val_top1": acc,
    }
    _write(out, fc, net, info)
    print(json.dumps({"train_and_fine_tune": total, "draw": times["draw"], "val_top1": acc}))
    return info


def _write(out: Path, fc: FcNet, net: Any, info: dict[str, Any]) -> None:
    """Both weight files and demo_fc.json, each atomically; then drop the resume points."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in fc.state_dict().items()}
    files.write_bytes(out / FC_FILE, safetensors_bytes(state))
    save_converted(net.model, out / GAP_FILE, classes=list(CLASSES), transform=demo_transform(),
                   training={"recipe": "python -m camviz.demo.train_fc",
                             "stage2": info["stage2_gap"]["settings"],
                             "val_top1": info["val_top1"]})
    files.write_text(out / "demo_fc.json", json.dumps(info, indent=1) + "\n")
    for ck in ("fc.ckpt", "gap.ckpt"):  # the run is complete: its resume points are not needed
        (out / ck).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
    raise SystemExit(0)
