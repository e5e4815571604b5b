"""Train the demo GAP network and its GMP twin on class labels only.

    python -m camviz.demo.train                 # both nets, into camviz/demo/weights/
    python -m camviz.demo.train --images 512 --stage1-steps 20 --steps 10 --out /tmp/w
                                                # a quick smoke run

The recipe (see :func:`main`): stage 1 pretrains a plain stride-8 trunk with max pooling (it
learns fast); stage 2 warm-starts the gated stride-4 trunk of :mod:`camviz.demo.net` from it and
trains that one trunk under two heads at once, a GAP head and a GMP head, on a weighted sum of
their losses (GAP 0.25, GMP 0.75). The GAP net is the trunk with the GAP head, its twin the same
trunk with the GMP head: trained together, on the same batches, so the two differ only in how
the map is pooled. Heads are kept non-negative and learn at 10x the trunk's rate (average-pooled
values are several times smaller than max-pooled ones, so the GAP head needs larger weights).

Why not each net on its own: a GAP net trained alone learns part detectors that fire on every
part of their type, stray parts included, and its maps spread over the clutter around the object
(GT-known loc 38%); a trunk trained with max pooling alone keeps the maps on the object but
spreads each class over shared units that fire hardest on other classes' objects, so a class's
top units are labelled with other classes' parts. Trained together, the max-pooled loss keeps
the maps on the object and the average-pooled one keeps the units on parts.

Training images are drawn once, in parallel, into memory (``--images`` distinct train-split
images, uint8) and reused across steps in seeded epochs. Training runs under bfloat16 autocast on
the CPU (about twice as fast there); the saved weights are float32.

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

from camviz import files
from camviz.demo.net import MEAN, STD, WEIGHT_FILES, WEIGHTS_DIR, DemoModel
from camviz.demo.world import CLASSES, IMAGE_SIZE, WORLD_SEED, WORLD_VERSION, render_sample

NETS = {"demo": "avg", "demo-gmp": "max"}


class DemoImages(Dataset):
    """Images ``start .. start + n - 1`` of a demo split as (normalised tensor, label), drawn on
    access (nothing is stored). ``raw=True`` gives (uint8 HWC array, label) instead.

    Example:
        >>> x, y = DemoImages("train", 3)[0]
        >>> x.shape, 0 <= y < len(CLASSES)
        (torch.Size([3, 128, 128]), True)
    """

    def __init__(
        self, split: str, n: int, start: int = 0, seed: int = WORLD_SEED, raw: bool = False
    ) -> None:
        self.split, self.n, self.start, self.seed, self.raw = split, n, start, seed, raw

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        s = render_sample(self.split, self.start + i, seed=self.seed)
        if self.raw:
            return torch.from_numpy(s.image), s.label
        return normalise(torch.from_numpy(s.image)[None])[0], s.label


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) images -> the demo nets' float input (B, 3, H, W), channels-last.

    Example:
        >>> normalise(torch.full((1, 2, 2, 3), 128, dtype=torch.uint8))[0, :, 0, 0]
        tensor([0.0078, 0.0078, 0.0078])
    """
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


class TrainingImages:
    """``n`` distinct train-split images held in memory (uint8), drawn by ``workers`` processes
    (``chunk`` images at a time each).

    ``batches(steps, batch, seed)`` yields (input, labels) for ``steps`` steps: seeded
    shuffles, one epoch after another, so the same seed gives the same batches.

    Example:
        >>> pool = TrainingImages(8, workers=0, progress=False)
        >>> [tuple(x.shape) for x, _ in pool.batches(steps=3, batch=4, seed=0)]
        [(4, 3, 128, 128), (4, 3, 128, 128), (4, 3, 128, 128)]
    """

    def __init__(
        self, n: int, workers: int = 2, progress: bool = True, start: int = 0, chunk: int = 250
    ) -> None:
        if n < 1:
            raise ValueError(f"need at least one training image, got {n}")
        self.images = torch.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8)
        self.labels = torch.empty(n, dtype=torch.int64)
        loader = DataLoader(
            DemoImages("train", n, start=start, raw=True), batch_size=chunk, num_workers=workers
        )
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="draw training images", unit="img")
        i = 0
        for x, y in loader:
            self.images[i : i + len(y)] = x
            self.labels[i : i + len(y)] = y
            i += len(y)
            if bar is not None:
                bar.update(len(y))
        if bar is not None:
            bar.close()

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, steps: int, batch: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        n = len(self)
        if batch > n:
            raise ValueError(f"batch {batch} is larger than the {n} training images")
        order, j = torch.randperm(n, generator=g), 0
        for _ in range(steps):
            if j + batch > n:
                order, j = torch.randperm(n, generator=g), 0
            idx = order[j : j + batch].sort().values
            j += batch
            yield normalise(self.images[idx]), self.labels[idx]


# Layers of the stride-8 trunk (`features.<i>`) that reappear in the fused trunk.
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
    shape, names of the stride-8 layout translated; the head only if ``head``); returns the
    names copied.

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


def _pool(f: torch.Tensor, pool: str) -> torch.Tensor:
    return f.amax(dim=(2, 3)) if pool == "max" else f.mean(dim=(2, 3))


def _save(model: torch.nn.Module, path: Path) -> None:
    """Save a plain, contiguous CPU copy of ``model``'s state dict (loads with weights_only)."""
    with files.atomic_open(path) as fh:
        torch.save({n: t.detach().cpu().contiguous().clone()
                    for n, t in model.state_dict().items()}, fh)


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
    steps: int = 600,
    batch: int = 64,
    lr: float = 3e-4,
    weight_decay: float = 5e-4,
    seed: int = 0,
    val: int = 1000,
    out: str | os.PathLike[str] | None = None,
    data: TrainingImages | None = None,
    bf16: bool = True,
    progress: bool = True,
    checkpoint_every: int = 0,
    init: str | os.PathLike[str] | None = None,
    init_head: bool = False,
    arch: str = "fused",
    nonneg_head: bool = True,
    nets: tuple[str, ...] = ("demo", "demo-gmp"),
    shared: bool = False,
    gap_weight: float = 0.5,
    head_lr_mult: float = 1.0,
) -> dict[str, Any]:
    """Train the GAP ("demo") and/or GMP ("demo-gmp") nets on the same batches; save them.

    ``init``: a weights file every net starts from (its features; the head too if
    ``init_head``), or a folder holding each net's own file. ``shared``: one trunk under both
    heads, trained on ``gap_weight`` x the GAP loss + (1 - ``gap_weight``) x the GMP loss (each
    saved file then holds that trunk and its own head).
    ``head_lr_mult``: the heads' learning rate relative to ``lr`` (no weight decay on heads).
    ``data``: the training images (default: ``steps * batch`` of them, at most 24,000, drawn
    here). Writes ``demo_gap.pt`` and/or
    ``demo_gmp.pt`` and ``demo.json`` (settings, accuracy on ``val`` images of the val split,
    CPU and wall time) into ``out`` (default: the package's weights folder) and returns the
    json's content.

    Example:
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> train(steps=1, batch=2, val=2, out=out, progress=False, bf16=False)["steps"]
        1
    """
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    children0 = os.times()
    if data is None:
        data = TrainingImages(min(steps * batch, 24000), workers=0, progress=progress)
    torch.manual_seed(seed)
    models = {k: DemoModel(pool=NETS[k], arch=arch) for k in nets}
    if shared:  # one trunk under both heads: the GMP net's features are the GAP net's
        trunk = next(iter(models.values())).features
        for m in models.values():
            m.features = trunk
    warm: dict[str, int] = {}
    if init is not None:
        for k, m in models.items():
            src = Path(init) / WEIGHT_FILES[m.pool] if Path(init).is_dir() else Path(init)
            warm[k] = len(warm_start(m, src, head=init_head))
    if nonneg_head:
        for m in models.values():
            with torch.no_grad():
                m.head.weight.abs_()
    # one optimizer per group of nets trained together: all of them if shared, else one each
    groups = [tuple(models)] if shared else [(k,) for k in models]
    opts = []
    for group in groups:
        heads = dict.fromkeys(p for k in group for p in models[k].head.parameters())
        trunk = dict.fromkeys(p for k in group for p in models[k].features.parameters())
        for k in group:
            models[k].to(memory_format=torch.channels_last).train()
        opts.append(torch.optim.AdamW(
            [{"params": [p for p in trunk if p.ndim > 1], "weight_decay": weight_decay},
             {"params": [p for p in trunk if p.ndim <= 1], "weight_decay": 0},
             {"params": list(heads), "weight_decay": 0, "lr_mult": head_lr_mult}],
            lr=lr,
        ))
    warmup = max(1, steps // 20)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"train {' + '.join(models)} ({arch})", unit="step")
    running = dict.fromkeys(models, float("nan"))
    dest = Path(out) if out is not None else WEIGHTS_DIR
    for step, (x, y) in enumerate(data.batches(steps, batch, seed=seed)):
        rate = _lr_at(step, steps, lr, warmup)
        for group, opt in zip(groups, opts):
            for g in opt.param_groups:
                g["lr"] = rate * g.get("lr_mult", 1.0)
            losses = {}
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                f = models[group[0]].features(x)  # shared by the group
                for k in group:
                    losses[k] = F.cross_entropy(models[k].head(_pool(f, models[k].pool)).float(), y)
            if len(losses) == 2:
                loss = gap_weight * losses["demo"] + (1 - gap_weight) * losses["demo-gmp"]
            else:
                loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in losses.items():
                if nonneg_head:  # class maps then add up evidence for their class only
                    with torch.no_grad():
                        models[k].head.weight.clamp_(min=0.0)
                v = float(v.detach())
                running[k] = v if math.isnan(running[k]) else 0.95 * running[k] + 0.05 * v
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            ck = dest / f"step{step + 1}"
            ck.mkdir(parents=True, exist_ok=True)
            for m in models.values():
                _save(m, ck / WEIGHT_FILES[m.pool])
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()})
    if bar is not None:
        bar.close()
    train_cpu = time.process_time() - t_cpu
    children = os.times()
    child_cpu = (children.children_user - children0.children_user) + (
        children.children_system - children0.children_system
    )
    train_wall = time.perf_counter() - t_wall

    for m in models.values():
        m.to(memory_format=torch.contiguous_format).eval()
    acc = evaluate(models, "val", val) if val > 0 else {}
    dest.mkdir(parents=True, exist_ok=True)
    for m in models.values():
        _save(m, dest / WEIGHT_FILES[m.pool])
    info = {
        "world_version": WORLD_VERSION,
        "world_seed": WORLD_SEED,
        "classes": list(CLASSES),
        "seed": seed,
        "arch": arch,
        "nonneg_head": nonneg_head,
        "shared_trunk": shared,
        "gap_weight": gap_weight if shared and len(models) == 2 else None,
        "head_lr_mult": head_lr_mult,
        "steps": steps,
        "batch": batch,
        "train_images": len(data),
        "lr": lr,
        "weight_decay": weight_decay,
        "bf16_autocast": bf16,
        "warm_start": {"from": str(init), "tensors": warm} if init is not None else None,
        "torch_threads": torch.get_num_threads(),
        "train_wall_s": round(train_wall, 1),
        "train_cpu_s": round(train_cpu + child_cpu, 1),
        "final_loss": {k: round(v, 4) for k, v in running.items()},
        "val_images": val,
        "val_top1": acc,
        "nets": {k: {"file": WEIGHT_FILES[m.pool], "pool": m.pool} for k, m in models.items()},
    }
    files.write_text(dest / "demo.json", json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m camviz.demo.train [--out DIR] ...``, the bundled weights' recipe.

    Draw ``--images`` training images. Stage 1: pretrain the plain stride-8 trunk with max
    pooling (``--stage1-steps``, OUT/stage1). Stage 2: the gated trunk, warm-started from stage
    1's layers, under a GAP and a GMP head at once (``--steps``, ``--gap-weight``, OUT/stage2).
    The final nets are stage 2's, evaluated on ``--val`` val images; the wall and CPU time in
    OUT/demo.json include drawing the images.
    """
    p = argparse.ArgumentParser(
        prog="python -m camviz.demo.train", description=__doc__.split("\n")[0]
    )
    p.add_argument("--images", type=int, default=24000,
                   help="distinct training images drawn into memory (default 24000, 1.2 GB)")
    p.add_argument("--stage1-steps", type=int, default=1000,
                   help="steps of the stride-8 pretraining (default 1000)")
    p.add_argument("--stage1-lr", type=float, default=3e-3)
    p.add_argument("--steps", type=int, default=1200,
                   help="steps of the gated trunk under both heads, stage 2 (default 1200)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of stage 2")
    p.add_argument("--gap-weight", type=float, default=0.25,
                   help="weight of the GAP head's loss in stage 2, the GMP head's is 1 - it")
    p.add_argument("--head-lr-mult", type=float, default=10.0,
                   help="the heads' learning rate relative to the trunk's in stage 2")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val", type=int, default=1000, help="val images to report accuracy on")
    p.add_argument("--workers", type=int, default=2, help="processes drawing the images")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-bf16", action="store_true", help="train in float32")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="also save the weights every N steps into <stage>/step<N>/ (0: never)")
    p.add_argument("--out", default=None, help="folder for the weights (default: the package's)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    np.seterr(all="ignore")
    t_wall, t_cpu, children0 = time.perf_counter(), time.process_time(), os.times()
    out = Path(a.out) if a.out else WEIGHTS_DIR
    data = TrainingImages(a.images, workers=a.workers)
    draw = {"images": a.images, "wall_s": round(time.perf_counter() - t_wall, 1)}
    common = dict(batch=a.batch, data=data, bf16=not a.no_bf16,
                  checkpoint_every=a.checkpoint_every, val=0)
    stages = {
        "stage1": train(steps=a.stage1_steps, lr=a.stage1_lr, out=out / "stage1",
                        arch="stride8", nets=("demo-gmp",), nonneg_head=False, seed=a.seed,
                        **common),
    }
    stages["stage2"] = train(steps=a.steps, lr=a.lr, out=out / "stage2", arch="fused",
                             init=out / "stage1" / WEIGHT_FILES["max"], shared=True,
                             gap_weight=a.gap_weight, head_lr_mult=a.head_lr_mult,
                             seed=a.seed + 1, **common)
    children = os.times()
    total = {
        "wall_s": round(time.perf_counter() - t_wall, 1),
        "cpu_s": round(time.process_time() - t_cpu + children.children_user
                       - children0.children_user + children.children_system
                       - children0.children_system, 1),
    }
    finish(out, out / "stage2", stages, a.val, draw, total)
    info = json.loads((out / "demo.json").read_text())
    print(json.dumps({k: info[k] for k in ("train_wall_s", "train_cpu_s", "val_top1")}))
    return 0


def finish(
    out: Path, src: Path, stages: dict[str, dict[str, Any]], val: int,
    draw: dict[str, Any], total: dict[str, float],
) -> None:
    """Copy the final weights of both nets from ``src`` into ``out``, measure them on ``val`` val
    images and write ``demo.json`` with every stage's settings and times."""
    models = {}
    for name, pool in NETS.items():
        state = torch.load(src / WEIGHT_FILES[pool], map_location="cpu", weights_only=True)
        with files.atomic_open(out / WEIGHT_FILES[pool]) as fh:
            torch.save(state, fh)
        m = DemoModel(pool=pool)
        m.load_state_dict(state)
        models[name] = m.eval()
    acc = evaluate(models, "val", val) if val > 0 else {}
    keep = ("arch", "shared_trunk", "head_lr_mult", "steps", "batch", "lr", "nonneg_head",
            "gap_weight", "warm_start", "train_wall_s", "train_cpu_s", "final_loss")
    last = stages["stage2"]
    info = {k: last[k] for k in ("world_version", "world_seed", "classes", "bf16_autocast",
                                 "torch_threads")}
    info.update({
        "seed": stages["stage1"]["seed"],
        "train_images": draw,
        "stages": {k: {f: v.get(f) for f in keep} | {"nets": sorted(v["nets"])}
                   for k, v in stages.items()},
        "final": {k: src.name for k in NETS},
        "train_wall_s": total["wall_s"],
        "train_cpu_s": total["cpu_s"],
        "val_images": val,
        "val_top1": acc,
    })
    files.write_text(out / "demo.json", json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
