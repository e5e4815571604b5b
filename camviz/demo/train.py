"""Train the demo GAP network and its GMP twin on class labels only.

    python -m camviz.demo.train                 # both nets, into camviz/demo/weights/
    python -m camviz.demo.train --steps 20 --out /tmp/w   # a quick try

Both networks see the same stream of freshly generated training images (each batch is drawn once,
in a loader process, and fed to both), so "trained the same way" holds exactly. Seeded: the images
are fixed by their indices and the initial weights by ``--seed``. Training runs under bfloat16
autocast on the CPU (about twice as fast there); the saved weights are float32.

Example:
    >>> import tempfile
    >>> info = train(steps=2, batch=4, val=8, out=tempfile.mkdtemp(), progress=False)
    >>> sorted(info["nets"])
    ['demo', 'demo-gmp']
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from camviz.demo.net import MEAN, STD, WEIGHT_FILES, WEIGHTS_DIR, DemoModel
from camviz.demo.world import CLASSES, WORLD_SEED, WORLD_VERSION, render_sample


class DemoImages(Dataset):
    """Images ``start .. start + n - 1`` of a demo split as (normalised tensor, label), drawn on
    access (nothing is stored).

    Example:
        >>> x, y = DemoImages("train", 3)[0]
        >>> x.shape, 0 <= y < len(CLASSES)
        (torch.Size([3, 128, 128]), True)
    """

    def __init__(self, split: str, n: int, start: int = 0, seed: int = WORLD_SEED) -> None:
        self.split, self.n, self.start, self.seed = split, n, start, seed
        self._mean = torch.tensor(MEAN).view(3, 1, 1)
        self._std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        s = render_sample(self.split, self.start + i, seed=self.seed)
        x = torch.from_numpy(s.image).permute(2, 0, 1).float().div_(255.0)
        return (x - self._mean) / self._std, s.label


def _lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * p))


@torch.no_grad()
def evaluate(
    models: dict[str, DemoModel], split: str, n: int, batch: int = 100
) -> dict[str, float]:
    """Top-1 accuracy (%) of each model on the first ``n`` images of ``split``.

    Example:
        >>> evaluate({"demo": DemoModel()}, "val", 2)["demo"] <= 100
        True
    """
    loader = DataLoader(DemoImages(split, n), batch_size=batch, num_workers=0)
    right = dict.fromkeys(models, 0)
    for m in models.values():
        m.eval()
    for x, y in loader:
        x = x.contiguous(memory_format=torch.channels_last)
        for k, m in models.items():
            right[k] += int((m(x).argmax(1) == y).sum())
    return {k: 100.0 * v / n for k, v in right.items()}


def train(
    steps: int = 1800,
    batch: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 5e-4,
    seed: int = 0,
    val: int = 1000,
    out: str | os.PathLike[str] | None = None,
    workers: int = 1,
    bf16: bool = True,
    progress: bool = True,
    checkpoint_every: int = 0,
    nets: tuple[str, ...] = ("demo", "demo-gmp"),
) -> dict[str, Any]:
    """Train the GAP ("demo") and GMP ("demo-gmp") nets together; save their state dicts.

    Writes ``demo_gap.pt``, ``demo_gmp.pt`` and ``demo.json`` (settings, accuracy on ``val``
    images of the val split, CPU and wall time) into ``out`` (default: the package's weights
    folder) and returns the json's content.

    Example:
        >>> import tempfile
        >>> train(steps=1, batch=2, val=2, out=tempfile.mkdtemp(), progress=False)["steps"]
        1
    """
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    children0 = os.times()
    torch.manual_seed(seed)
    models = {"demo": DemoModel(pool="avg"), "demo-gmp": DemoModel(pool="max")}
    models = {k: models[k] for k in nets}
    opts = {}
    for k, m in models.items():
        m.to(memory_format=torch.channels_last).train()
        decay = [p for n, p in m.named_parameters() if p.ndim > 1]
        other = [p for n, p in m.named_parameters() if p.ndim <= 1]
        opts[k] = torch.optim.AdamW(
            [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0}],
            lr=lr,
        )
    data = DemoImages("train", steps * batch)
    loader = DataLoader(
        data, batch_size=batch, shuffle=False, num_workers=workers, drop_last=True,
        persistent_workers=False, prefetch_factor=4 if workers > 0 else None,
    )
    warmup = max(1, steps // 20)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="train demo + demo-gmp", unit="step")
    running = dict.fromkeys(models, float("nan"))
    for step, (x, y) in enumerate(loader):
        x = x.contiguous(memory_format=torch.channels_last)
        rate = _lr_at(step, steps, lr, warmup)
        for k, m in models.items():
            for g in opts[k].param_groups:
                g["lr"] = rate
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = m(x)
            loss = F.cross_entropy(logits.float(), y)
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()
            v = float(loss.detach())
            running[k] = v if math.isnan(running[k]) else 0.95 * running[k] + 0.05 * v
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            ck = (Path(out) if out is not None else WEIGHTS_DIR) / f"step{step + 1}"
            ck.mkdir(parents=True, exist_ok=True)
            for m in models.values():
                state = {n: t.detach().clone().contiguous() for n, t in m.state_dict().items()}
                torch.save(state, ck / WEIGHT_FILES[m.pool])
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()})
    if bar is not None:
        bar.close()
    del loader
    train_cpu = time.process_time() - t_cpu
    children = os.times()
    child_cpu = (children.children_user - children0.children_user) + (
        children.children_system - children0.children_system
    )
    train_wall = time.perf_counter() - t_wall

    for m in models.values():
        m.to(memory_format=torch.contiguous_format).eval()
    acc = evaluate(models, "val", val) if val > 0 else {}
    dest = Path(out) if out is not None else WEIGHTS_DIR
    dest.mkdir(parents=True, exist_ok=True)
    files = {"demo": WEIGHT_FILES["avg"], "demo-gmp": WEIGHT_FILES["max"]}
    for k, m in models.items():
        state = {n: t.detach().cpu().contiguous().clone() for n, t in m.state_dict().items()}
        torch.save(state, dest / files[k])
    info = {
        "world_version": WORLD_VERSION,
        "world_seed": WORLD_SEED,
        "classes": list(CLASSES),
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "train_images": steps * batch,
        "lr": lr,
        "weight_decay": weight_decay,
        "bf16_autocast": bf16,
        "torch_threads": torch.get_num_threads(),
        "train_wall_s": round(train_wall, 1),
        "train_cpu_s": round(train_cpu + child_cpu, 1),
        "train_cpu_s_main": round(train_cpu, 1),
        "train_cpu_s_loader": round(child_cpu, 1),
        "final_loss": {k: round(v, 4) for k, v in running.items()},
        "val_images": val,
        "val_top1": acc,
        "nets": {k: {"file": files[k], "pool": m.pool} for k, m in models.items()},
    }
    (dest / "demo.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m camviz.demo.train [--steps N] [--out DIR] ...``."""
    p = argparse.ArgumentParser(
        prog="python -m camviz.demo.train", description=__doc__.split("\n")[0]
    )
    p.add_argument("--steps", type=int, default=1800, help="optimizer steps (default 1800)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val", type=int, default=1000, help="val images to report accuracy on")
    p.add_argument("--workers", type=int, default=1, help="image-drawing loader processes")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-bf16", action="store_true", help="train in float32")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="also save the weights every N steps into OUT/step<N>/ (0: never)")
    p.add_argument("--nets", default="demo,demo-gmp", help="which nets to train")
    p.add_argument("--out", default=None, help="folder for the weights (default: the package's)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    np.seterr(all="ignore")
    info = train(steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed, val=a.val, out=a.out,
                 workers=a.workers, bf16=not a.no_bf16, checkpoint_every=a.checkpoint_every,
                 nets=tuple(a.nets.split(",")))
    print(json.dumps({k: info[k] for k in ("train_wall_s", "train_cpu_s", "val_top1")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
