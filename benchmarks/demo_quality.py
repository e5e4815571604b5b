"""How good the bundled demo networks are, on a held-out demo split (default: 1000 test images).

Reports, for "demo" (GAP) and "demo-gmp" (GMP):
- top-1 classification accuracy;
- GT-known localization: IoU >= 0.5 between the object box and the box of the largest connected
  region above 20% of the class map's maximum (the CAM paper's box; map of the true class,
  bilinearly upsampled to the input, min-max normalised, quantised to uint8 as in wsolevaluation,
  8-connected regions);
- top-1 localization (the same hit and the top-1 class right);
- baselines: a centred box of the best single size for the whole split (an oracle size, so a
  strong baseline), and the whole image.

    python benchmarks/demo_quality.py [--n 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from PIL import Image
from skimage.measure import label as cc_label

import camviz
from camviz.demo import ensure_split


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


def cam_box(map01: np.ndarray, t: float = 0.2) -> tuple[int, int, int, int]:
    """Inclusive box of the largest 8-connected region with u8 > int(t * max(u8))."""
    u8 = np.floor(map01 * 255).astype(np.int32)
    fg = u8 > int(t * u8.max())
    if not fg.any():
        return (0, 0, 0, 0)
    lab = cc_label(fg, connectivity=2)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    ys, xs = np.nonzero(lab == sizes.argmax())
    return (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def evaluate(name: str, root, ids, labels, boxes, batch: int = 100) -> dict:
    net = camviz.load_model(name, device="cpu")
    pred_boxes, top1 = [], []
    t0 = time.perf_counter()
    for i in range(0, len(ids), batch):
        paths = [str(root / p) for p in ids[i : i + batch]]
        res = net.run([Image.open(p).convert("RGB") for p in paths])
        y = torch.as_tensor(labels[i : i + batch])
        top1.append(res.logits.argmax(1).cpu().numpy())
        maps = res.cams(classes=y[:, None], size="input", normalize=True)[:, 0].cpu().numpy()
        pred_boxes.extend(cam_box(m) for m in maps)
    secs = time.perf_counter() - t0
    top1 = np.concatenate(top1)
    hit = iou(np.array(pred_boxes), boxes) >= 0.5
    right = top1 == labels
    return {
        "top1_acc": round(100 * right.mean(), 2),
        "gt_known_loc": round(100 * hit.mean(), 2),
        "top1_loc": round(100 * (hit & right).mean(), 2),
        "mean_iou": round(float(iou(np.array(pred_boxes), boxes).mean()), 3),
        "seconds": round(secs, 1),
    }


def baselines(boxes: np.ndarray, size: int = 128) -> dict:
    best = (0.0, 0)
    for side in range(8, size + 1, 2):
        lo = (size - side) // 2
        b = np.tile([lo, lo, lo + side - 1, lo + side - 1], (len(boxes), 1))
        acc = 100 * (iou(b, boxes) >= 0.5).mean()
        best = max(best, (acc, side))
    whole = np.tile([0, 0, size - 1, size - 1], (len(boxes), 1))
    return {
        "centred_box_best_size": round(best[0], 2),
        "centred_box_side": best[1],
        "whole_image": round(100 * (iou(whole, boxes) >= 0.5).mean(), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--split", default="test")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_grad_enabled(False)
    root = ensure_split(a.split, a.n, progress=True)
    ids, labels, boxes = read_split(root)
    out = {"split": a.split, "n": len(ids), "baselines": baselines(boxes)}
    for name in ("demo", "demo-gmp"):
        out[name] = evaluate(name, root, ids, labels, boxes)
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
