"""Benchmark: deletion + insertion (camviz.faithfulness) against the reference implementations.

Same process, same network, same images, same maps, same settings. The network is
efficientnet_lite0 with its ImageNet weights (``camviz.load_model``, offline); the images are
seeded random crops and flips of the photos scikit-image ships (``camviz.runner.PHOTOS``)
through the net's own transform, so the class probabilities mean something (the top-1
probability is printed). The maps are the top-1 class's from ``res.cams(size="input",
normalize=True)``, plus 1e-9 seeded noise in float64 so that no two pixels tie and every
implementation ranks them alike (RISE's ``np.argsort`` breaks ties otherwise). Settings:
``--steps`` steps, softmax probability of the top-1 class, one zero baseline for both games
(torchcam takes one baseline). The AUCs of every image (RISE: the curves, since its ``auc()``
spaces the points evenly) are checked equal to float32 tolerance and the time per image is
compared. Target: camviz >= 5x faster than the reference by batching (100 images, 50 steps).

References, installed outside the project's environment, only for this script:

* torchcam 0.5.0 ``DeletionInsertionMetric`` (batched itself: ``batch_size`` perturbed images
  per forward, 32 by default)::

      pip install --target /tmp/refs/torchcam --no-deps torchcam==0.5.0 matplotlib
      PYTHONPATH=/tmp/refs/torchcam python benchmarks/bench_faithfulness.py

* RISE's own ``CausalMetric.single_run`` (Petsiuk et al.; one forward per step and image), from
  ``evaluation.py`` of the authors' repository eclique/RISE: ``--rise DIR`` (a checkout of it;
  its ``utils.py`` needs matplotlib). Slow: ``--rise-images`` images only (default 10).

A missing reference is skipped with a message. ``--model`` takes any camviz model name;
``--random-weights`` loads it with ``weights=None``.

    python benchmarks/bench_faithfulness.py [--model efficientnet_lite0] [--random-weights]
        [--images 100] [--steps 50]
        [--batch 16] [--chunk 64] [--rise DIR] [--rise-images 10] [--device auto]
        [--threads N] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from functools import partial
from typing import Any

import numpy as np
import torch

import camviz
from camviz.faithfulness import deletion_insertion
from camviz.hooks import eval_mode
from camviz.runner import PHOTOS


class _Maps:
    """A torchcam CAM extractor that hands out the given maps (B, H, W)."""

    def __init__(self, model: torch.nn.Module, maps: torch.Tensor) -> None:
        self.model, self.maps = model, maps

    def __call__(self, class_idx: Any = None, scores: Any = None, normalized: bool = True,
                 **kw: Any) -> list[torch.Tensor]:
        return [self.maps]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self) -> Any:
        yield


def photo_inputs(net: Any, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` network inputs (n, 3, H, W): seeded random crops (40-100% of the shorter side, any
    place) of the photos scikit-image ships (``camviz.runner.PHOTOS``), every other one flipped
    left-right, preprocessed by the net's own transform (resize, centre crop, normalise)."""
    import skimage.data

    photos = [np.asarray(get(skimage.data))[..., :3] for get in PHOTOS.values()]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = int(rng.uniform(0.4, 1.0) * min(h, w))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = img[y : y + side, x : x + side]
        crops.append(np.ascontiguousarray(crop[:, ::-1] if (i // len(photos)) % 2 else crop))
    return net.prepare(crops).cpu()


#: the clock (``--clock``): the wall clock, or the process's CPU time (on a machine shared with
#: other jobs the wall clock also counts the time the others hold the cores)
CLOCK = [time.perf_counter]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_camviz(net: Any, xs: list[torch.Tensor], maps: list[torch.Tensor], steps: int,
               chunk: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    aucs, curves = [], []
    t0 = CLOCK[0]()
    for x, m in zip(xs, maps):
        out = deletion_insertion(net, net.run(x), m, steps=steps, deletion_baseline=0.0,
                                 insertion_baseline=0.0, batch_size=chunk)
        aucs.append(torch.stack([out["deletion"].auc, out["insertion"].auc], 1))
        curves.append(torch.stack([out["deletion"].probs, out["insertion"].probs], 1))
    _sync(net.device)
    return torch.cat(aucs).cpu(), torch.cat(curves).cpu().double(), CLOCK[0]() - t0


def run_torchcam(net: Any, xs: list[torch.Tensor], maps: list[torch.Tensor],
                 steps: int) -> tuple[torch.Tensor, float] | None:
    try:
        from torchcam.metrics import DeletionInsertionMetric
    except ImportError:
        print("torchcam is not installed: skipped (see this script's docstring)")
        return None
    sm = partial(torch.softmax, dim=-1)
    aucs = []
    t0 = CLOCK[0]()
    for x, m in zip(xs, maps):
        for i in range(len(x)):  # one image per update, to read each image's AUCs
            metric = DeletionInsertionMetric(_Maps(net.model, m[i : i + 1]), sm, steps=steps)
            metric.update(x[i : i + 1])
            s = metric.summary()
            aucs.append([s["deletion_auc"], s["insertion_auc"]])
    _sync(net.device)
    return torch.tensor(aucs, dtype=torch.float64), CLOCK[0]() - t0


def run_rise(net: Any, xs: list[torch.Tensor], maps: list[torch.Tensor], steps: int,
             rise_dir: str | None, n: int) -> tuple[torch.Tensor, float] | None:
    if rise_dir is None:
        print("RISE: no --rise DIR given: skipped (see this script's docstring)")
        return None
    sys.path.insert(0, rise_dir)
    try:
        import evaluation as rise  # RISE's evaluation.py
    except ImportError as err:
        print(f"RISE: cannot import evaluation.py from {rise_dir} ({err}): skipped")
        return None
    x = torch.cat(xs)[:n].cpu()
    m = torch.cat(maps)[:n].cpu().numpy()
    h, w = x.shape[-2:]
    rise.HW = h * w
    step = -(-h * w // steps)
    model = torch.nn.Sequential(net.model, torch.nn.Softmax(dim=1))
    saved = torch.Tensor.cuda
    if net.device.type != "cuda":
        torch.Tensor.cuda = lambda self, *a, **k: self  # RISE's code moves inputs with .cuda()
    try:
        games = [rise.CausalMetric(model, mode, step, torch.zeros_like) for mode in ("del", "ins")]
        curves = []
        t0 = CLOCK[0]()
        with torch.inference_mode(), eval_mode(net.model):  # as torchcam's update() does
            for i in range(n):
                curves.append([g.single_run(x[i : i + 1].clone(), m[i]) for g in games])
        _sync(net.device)
        # RISE's auc() spaces the points evenly; compared here are the curves themselves
        return torch.as_tensor(np.array(curves), dtype=torch.float64), CLOCK[0]() - t0
    finally:
        torch.Tensor.cuda = saved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--random-weights", action="store_true", help="weights=None")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16, help="images per camviz call")
    ap.add_argument("--chunk", type=int, default=64, help="perturbed images per forward")
    ap.add_argument("--rise", default=None, help="folder with RISE's evaluation.py")
    ap.add_argument("--rise-images", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = ap.parse_args()
    CLOCK[0] = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)

    weights = None if args.random_weights else "DEFAULT"
    net = camviz.load_model(args.model, weights=weights, device=args.device)
    x = photo_inputs(net, args.images)
    size = tuple(x.shape[-2:])
    g = torch.Generator().manual_seed(0)
    xs = [x[i : i + args.batch].to(net.device) for i in range(0, args.images, args.batch)]
    maps = []
    for xb in xs:
        cams = net.run(xb).cams(size="input", normalize=True)[:, 0].double()
        noise = torch.rand(cams.shape, generator=g, dtype=torch.float64).to(cams.device)
        maps.append(cams + 1e-9 * noise)
    run_camviz(net, xs[:1], maps[:1], 2, args.chunk)  # warm-up
    ours, ours_curves, t_ours = run_camviz(net, xs, maps, args.steps, args.chunk)
    n = args.images
    where = f"{net.device} ({torch.get_num_threads()} threads, {args.clock} clock)"
    print(f"{args.model}, {n} images {size[0]}x{size[1]}, {args.steps} steps, on {where}")
    print(f"  camviz    {t_ours / n * 1e3:8.1f} ms/image  (chunks of {args.chunk})")
    for name, got in (
        ("torchcam", run_torchcam(net, xs, maps, args.steps)),
        ("RISE", run_rise(net, xs, maps, args.steps, args.rise, min(args.rise_images, n))),
    ):
        if got is None:
            continue
        ref, t_ref = got
        k = len(ref)
        mine = ours[:k] if ref.ndim == 2 else ours_curves[:k]
        diff = float((mine - ref).abs().max())
        t_ours_k = t_ours / n * k
        print(
            f"  {name:<9} {t_ref / k * 1e3:8.1f} ms/image over {k} images: camviz "
            f"{t_ref / t_ours_k:.2f}x faster; {'AUCs' if ref.ndim == 2 else 'curves'} max "
            f"|diff| {diff:.2e}"
            f" ({'equal' if diff < 1e-5 else 'DIFFERENT'})"
        )
    print(f"  mean top-1 probability {float(ours_curves[:, 0, 0].mean()):.4f}, "
          f"mean deletion AUC {float(ours[:, 0].mean()):.4f}, "
          f"insertion AUC {float(ours[:, 1].mean()):.4f}")


if __name__ == "__main__":
    main()
