"""How good the bundled demo networks are, on a held-out demo split (default: 1000 test images).

Reports, for "demo" (GAP) and "demo-gmp" (GMP):
- top-1 classification accuracy;
- GT-known localization: IoU >= 0.5 between the object box and the box of the largest connected
  region above 20% of the class map's maximum (the CAM paper's box; map of the true class,
  bilinearly upsampled to the input, min-max normalised, quantised to uint8 as in wsolevaluation,
  8-connected regions);
- top-1 localization (the same hit and the top-1 class right);
- MaxBoxAccV2 (boxes from every region, IoU 30/50/70, best dataset-wide threshold) and PxAP
  against the object masks, with camviz.metrics (the wsolevaluation protocol);
- baselines: a centred box of the best single size for the whole split (an oracle size, so a
  strong baseline), and the whole image.

    python benchmarks/demo_quality.py [--n 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import camviz
from camviz.demo import ensure_split, load_demo
from camviz.demo.net import WEIGHT_FILES
from camviz.localize import paper_box
from camviz.metrics import BoxAccuracy, PixelAP


def read_split(root):
    ids = (root / "image_ids.txt").read_text().split()
    labels = dict(line.split(",") for line in (root / "class_labels.txt").read_text().split())
    boxes = {}
    for line in (root / "localization.txt").read_text().split():
        p, *b = line.split(",")
        boxes[p] = tuple(int(v) for v in b)
    return ids, np.array([int(labels[p]) for p in ids]), np.array([boxes[p] for p in ids])


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Inclusive-box IoU, rowwise, (N, 4) x (N, 4) -> (N,)."""
    ix = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1
    iy = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0] + 1) * (r[:, 3] - r[:, 1] + 1)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def evaluate(name: str, root, ids, labels, boxes, batch: int = 100, weights=None) -> dict:
    if weights is None:
        net = camviz.load_model(name, device="cpu")
    else:  # a folder of weights from `python -m camviz.demo.train --out DIR`
        pool = "max" if name == "demo-gmp" else "avg"
        net = load_demo(weights / WEIGHT_FILES[pool], device="cpu", pool=pool)
    pred_boxes, top1 = [], []
    maxbox, pxap = BoxAccuracy(multi_contour=True), PixelAP()
    masks = dict(
        line.split(",")[:2] for line in (root / "localization_masks.txt").read_text().split()
    )
    t0 = time.perf_counter()
    for i in range(0, len(ids), batch):
        paths = [str(root / p) for p in ids[i : i + batch]]
        res = net.run([Image.open(p).convert("RGB") for p in paths])
        y = torch.as_tensor(labels[i : i + batch])
        top1.append(res.logits.argmax(1).cpu().numpy())
        maps = res.cams(classes=y[:, None], size="input", normalize=True)[:, 0].cpu().numpy()
        pred_boxes.extend(paper_box(maps).tolist())
        maxbox.update(maps, [boxes[j : j + 1] for j in range(i, i + len(maps))])
        for j, m in enumerate(maps):
            gt = np.asarray(Image.open(root / masks[ids[i + j]])) > 127
            pxap.update(m, gt)
    secs = time.perf_counter() - t0
    top1 = np.concatenate(top1)
    hit = iou(np.array(pred_boxes), boxes) >= 0.5
    right = top1 == labels
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1
    bins = {}
    for lo, hi in ((0.15, 0.25), (0.25, 0.35), (0.35, 0.45), (0.45, 0.61)):
        sel = (side >= lo * 128) & (side < hi * 128)
        key = f"{lo:.2f}-{min(hi, 0.6):.2f}"
        bins[key] = round(100 * hit[sel].mean(), 1) if sel.any() else None
    return {
        "top1_acc": round(100 * right.mean(), 2),
        "gt_known_loc": round(100 * hit.mean(), 2),
        "top1_loc": round(100 * (hit & right).mean(), 2),
        "gt_known_loc_by_object_side": bins,
        "mean_iou": round(float(iou(np.array(pred_boxes), boxes).mean()), 3),
        "MaxBoxAccV2": round(maxbox.compute()["MaxBoxAccV2"], 2),
        "PxAP": round(pxap.compute()["PxAP"], 2),
        "seconds": round(secs, 1),
    }


def baselines(boxes: np.ndarray, size: int = 128) -> dict:
    best = (0.0, 0)
    for side in range(8, size + 1, 2):
        lo = (size - side) // 2
        b = np.tile([lo, lo, lo + side - 1, lo + side - 1], (len(boxes), 1))
        acc = 100 * (iou(b, boxes) >= 0.5).mean()
        best = max(best, (acc, side))
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1
    big = side >= 0.45 * size
    best_big = 0.0
    for s in range(8, size + 1, 2):
        lo = (size - s) // 2
        b = np.tile([lo, lo, lo + s - 1, lo + s - 1], (int(big.sum()), 1))
        best_big = max(best_big, 100 * (iou(b, boxes[big]) >= 0.5).mean())
    whole = np.tile([0, 0, size - 1, size - 1], (len(boxes), 1))
    return {
        "centred_box_best_size": round(best[0], 2),
        "centred_box_side": best[1],
        "centred_box_best_size_objects_over_45pct": round(best_big, 1),
        "whole_image": round(100 * (iou(whole, boxes) >= 0.5).mean(), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--split", default="test")
    p.add_argument("--json", default=None)
    p.add_argument("--weights", default=None, help="folder of weights (default: the bundled)")
    p.add_argument("--nets", default="demo,demo-gmp")
    a = p.parse_args(argv)
    torch.set_grad_enabled(False)
    root = ensure_split(a.split, a.n, progress=True)
    ids, labels, boxes = read_split(root)
    out = {"split": a.split, "n": len(ids), "baselines": baselines(boxes)}
    weights = Path(a.weights) if a.weights else None
    for name in a.nets.split(","):
        out[name] = evaluate(name, root, ids, labels, boxes, weights=weights)
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
