"""Train the demo GAP network and its GMP twin on class labels only.

    python -m camviz.demo.train                 # both nets, into camviz/demo/weights/
    python -m camviz.demo.train --stage1-steps 20 --steps 10 --stage3-steps 10 --out /tmp/w

Three stages (see :func:`main`): the plain stride-8 nets first (they learn fast), then the gated
nets (stride-4 maps, see :mod:`camviz.demo.net`) warm-started from them, then more steps for the
GAP net alone; the heads of the gated nets are kept non-negative.

Both networks see the same stream of freshly generated training images (each batch is drawn once,
in a loader process, and fed to both), so "trained the same way" holds exactly. Seeded: the images
are fixed by their indices and the initial weights by ``--seed``. Training runs under bfloat16
autocast on the CPU (about twice as fast there); the saved weights are float32.

Example:
    >>> import tempfile
    >>> info = train(steps=2, batch=4, val=8, out=tempfile.mkdtemp(), progress=False, bf16=False)
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


# Layers of the first demo nets (a plain stride-8 stack, `features.<i>`) that reappear in the
# fused trunk: a warm start from those weights (`--init`) keeps what they learned.
_STRIDE8_TO_FUSED = {
    "features.0.": "features.stem.0.", "features.1.": "features.stem.1.",
    "features.3.": "features.stem.3.", "features.4.": "features.stem.4.",
    "features.6.": "features.stem.6.", "features.7.": "features.stem.7.",
    "features.9.": "features.context.0.", "features.10.": "features.context.1.",
    "features.12.": "features.context.3.", "features.13.": "features.context.4.",
    "features.15.": "features.context.6.", "features.16.": "features.context.7.",
}


def warm_start(
    model: torch.nn.Module, path: str | os.PathLike[str], head: bool = False
) -> list[str]:
    """Copy every feature tensor of a saved demo state dict that fits ``model`` (same name and
    shape, names of the older stride-8 layout translated; the head only if ``head``); returns
    the names copied.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "w.pt"); torch.save(DemoModel().state_dict(), p)
        >>> len(warm_start(DemoModel(), p)) == len(DemoModel().state_dict()) - 2
        True
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    copied = []
    for name, t in state.items():
        for old, new in _STRIDE8_TO_FUSED.items():
            if name.startswith(old) and name not in own:
                name = new + name[len(old):]
                break
        if name in own and own[name].shape == t.shape and (head or not name.startswith("head.")):
            own[name] = t.clone()
            copied.append(name)
    model.load_state_dict(own)
    return copied


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
    init: str | os.PathLike[str] | None = None,
    init_head: bool = False,
    arch: str = "fused",
    nonneg_head: bool = True,
    nets: tuple[str, ...] = ("demo", "demo-gmp"),
) -> dict[str, Any]:
    """Train the GAP ("demo") and GMP ("demo-gmp") nets together; save their state dicts.

    Writes ``demo_gap.pt``, ``demo_gmp.pt`` and ``demo.json`` (settings, accuracy on ``val``
    images of the val split, CPU and wall time) into ``out`` (default: the package's weights
    folder) and returns the json's content.

    Example:
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> train(steps=1, batch=2, val=2, out=out, progress=False, bf16=False)["steps"]
        1
    """
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    children0 = os.times()
    torch.manual_seed(seed)
    pools = (("demo", "avg"), ("demo-gmp", "max"))
    models = {k: DemoModel(pool=pool, arch=arch) for k, pool in pools}
    models = {k: models[k] for k in nets}
    warm: dict[str, int] = {}
    if init is not None:
        for k, m in models.items():
            warm[k] = len(warm_start(m, Path(init) / WEIGHT_FILES[m.pool], head=init_head))
    if nonneg_head:
        for m in models.values():
            with torch.no_grad():
                m.head.weight.abs_()
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
            if nonneg_head:  # class maps then add up evidence for their class only
                with torch.no_grad():
                    m.head.weight.clamp_(min=0.0)
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
        "arch": arch,
        "nonneg_head": nonneg_head,
        "steps": steps,
        "batch": batch,
        "train_images": steps * batch,
        "lr": lr,
        "weight_decay": weight_decay,
        "bf16_autocast": bf16,
        "warm_start": {"from": str(init), "tensors": warm} if init is not None else None,
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
    """Command line: ``python -m camviz.demo.train [--out DIR] ...``, the bundled weights' recipe.

    Stage 1: the plain stride-8 nets (``--stage1-steps``, into OUT/stage1). Stage 2: the gated
    nets, both, warm-started from stage 1's layers (``--steps``, OUT/stage2). Stage 3: the GAP
    net alone goes on from stage 2, head included (``--stage3-steps``, OUT/stage3): average
    pooling learns more slowly than max pooling, which has converged by then. The final GAP net
    is stage 3's, the GMP net stage 2's; both are evaluated on ``--val`` val images.
    """
    p = argparse.ArgumentParser(
        prog="python -m camviz.demo.train", description=__doc__.split("\n")[0]
    )
    p.add_argument("--stage1-steps", type=int, default=1500,
                   help="steps of the stride-8 first stage (default 1500; 0: none)")
    p.add_argument("--stage1-lr", type=float, default=3e-3)
    p.add_argument("--steps", type=int, default=500, help="steps of stage 2 (default 500)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of stages 2, 3")
    p.add_argument("--stage3-steps", type=int, default=600,
                   help="more steps for the GAP net alone (default 600; 0: none)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val", type=int, default=1000, help="val images to report accuracy on")
    p.add_argument("--workers", type=int, default=1, help="image-drawing loader processes")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-bf16", action="store_true", help="train in float32")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="also save the weights every N steps into <stage>/step<N>/ (0: never)")
    p.add_argument("--init", default=None, help="folder of earlier weights to start from")
    p.add_argument("--init-head", action="store_true", help="with --init: the heads too")
    p.add_argument("--out", default=None, help="folder for the weights (default: the package's)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    np.seterr(all="ignore")
    out = Path(a.out) if a.out else WEIGHTS_DIR
    common = dict(batch=a.batch, seed=a.seed, workers=a.workers, bf16=not a.no_bf16,
                  checkpoint_every=a.checkpoint_every, val=0)
    stages: dict[str, dict[str, Any]] = {}
    init, head = a.init, a.init_head
    if a.stage1_steps > 0:
        stages["stage1"] = train(steps=a.stage1_steps, lr=a.stage1_lr, out=out / "stage1",
                                 arch="stride8", init=init, init_head=head, nonneg_head=False,
                                 **common)
        init, head = out / "stage1", False
    stages["stage2"] = train(steps=a.steps, lr=a.lr, out=out / "stage2", arch="fused",
                             init=init, init_head=head, **common)
    gap_from = out / "stage2"
    if a.stage3_steps > 0:
        stages["stage3"] = train(steps=a.stage3_steps, lr=a.lr, out=out / "stage3", arch="fused",
                                 init=out / "stage2", init_head=True, nets=("demo",), **common)
        gap_from = out / "stage3"
    finish(out, {"demo": gap_from, "demo-gmp": out / "stage2"}, stages, a.val)
    info = json.loads((out / "demo.json").read_text())
    print(json.dumps({k: info[k] for k in ("train_wall_s", "train_cpu_s", "val_top1")}))
    return 0


def finish(
    out: Path, sources: dict[str, Path], stages: dict[str, dict[str, Any]], val: int
) -> None:
    """Copy the final weights of each net into ``out``, measure them on ``val`` val images and
    write ``demo.json`` with every stage's settings and times (summed into the totals)."""
    models = {}
    for name, src in sources.items():
        pool = "avg" if name == "demo" else "max"
        state = torch.load(src / WEIGHT_FILES[pool], map_location="cpu", weights_only=True)
        torch.save(state, out / WEIGHT_FILES[pool])
        m = DemoModel(pool=pool)
        m.load_state_dict(state)
        models[name] = m.eval()
    acc = evaluate(models, "val", val) if val > 0 else {}
    keep = ("arch", "steps", "batch", "lr", "nonneg_head", "warm_start", "train_wall_s",
            "train_cpu_s", "final_loss")
    last = next(reversed(stages.values()))
    info = {k: last[k] for k in ("world_version", "world_seed", "classes", "seed",
                                 "bf16_autocast", "torch_threads")}
    info.update({
        "stages": {k: {f: v.get(f) for f in keep} | {"nets": sorted(v["nets"])}
                   for k, v in stages.items()},
        "final": {k: str(v.name) for k, v in sources.items()},
        "train_wall_s": round(sum(v["train_wall_s"] for v in stages.values()), 1),
        "train_cpu_s": round(sum(v["train_cpu_s"] for v in stages.values()), 1),
        "val_images": val,
        "val_top1": acc,
    })
    (out / "demo.json").write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
