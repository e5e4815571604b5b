"""Generic localization on ground truth: new heads on the frozen demo trunk for unseen classes.

The CAM paper (section 4) fits a linear SVM on the GAP features of a network trained on ImageNet
and finds that the class maps of the new head localize the new classes. Here the trunk is the
bundled demo net's (``camviz.load_model("demo")``, trained on the world's 9 base classes) and the
new classes are the world's 4 novel ones (``demo-novel:...``: dumbbell, glasses, robot, pine,
arrangements of the same parts that no base class uses). For k = 10, 50 and 200 training images
per novel class (drawn ``--draws`` times with different seeds from a 1000-image novel train split),
a softmax head and a one-vs-rest squared-hinge SVM head are fitted with ``camviz.fit_linear``
(L2 strength chosen on 20% held out) and scored on 1000 held-out novel test images:

- top-1 classification accuracy;
- GT-known localization with the CAM paper's box, as ``benchmarks/demo_quality.py``: the true
  class's map upsampled bilinearly to the input, min-max normalised, the largest 8-connected
  region above 20% of the maximum, IoU >= 0.5 with the object box;
- MaxBoxAccV2 with ``camviz.evaluate``'s protocol (``Scores``: bicubic, wsolevaluation).

Against: the demo net on its own classes (1000 base test images), a head fitted the same way
on 200 images per base class (the same fitting, on classes the trunk was trained for), and the
best centred box (one size for the whole split, an oracle size) on the novel test boxes. One
forward pass per test split: every head's maps come from the same features.

    python benchmarks/fewshot_quality.py [--draws 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import camviz
from camviz.datasets import WsolDataset, WsolMetadata, collate, resolve_data
from camviz.evaluate import Scores, eval_transform
from camviz.heads import pool_features
from camviz.linearfit import fit_linear
from camviz.localize import paper_box
from camviz.result import CamResult

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_quality import baselines, iou, read_split  # noqa: E402


def fit_heads(net, spec: str, ks, losses, draws: int) -> dict:
    """{(k, loss, draw): (weight, bias, l2, held-out accuracy)} on the pooled features of spec."""
    pooled = pool_features(net, resolve_data(spec, net.transform, need="labels"), progress=True)
    y = pooled.labels
    c = int(y.max()) + 1
    heads = {}
    for k in ks:
        for d in range(draws):
            g = torch.Generator().manual_seed(1000 * k + d)
            idx = torch.cat([(y == j).nonzero().flatten()[torch.randperm(int((y == j).sum()),
                                                                         generator=g)[:k]]
                             for j in range(c)])
            if any(int((y[idx] == j).sum()) < k for j in range(c)):
                raise SystemExit(f"{spec} has fewer than {k} images of a class")
            for loss in losses:
                t0 = time.perf_counter()
                fit = fit_linear(pooled.features[idx], y[idx], c, loss=loss, seed=d)
                heads[(k, loss, d)] = (fit.weight, fit.bias, fit.l2, fit.holdout_accuracy,
                                       time.perf_counter() - t0)
    return heads


def score_heads(net, root: Path, heads: dict, batch: int = 100) -> dict:
    """One pass over a split; every head scored from the same features."""
    meta = WsolMetadata(root)
    tf = eval_transform(net)
    h, w = tf.resize
    loader = DataLoader(WsolDataset(meta, transform=tf, map_size=(w, h)), batch_size=batch,
                        collate_fn=collate)
    scores = {name: Scores(meta.has_boxes, meta.has_masks) for name in heads}
    hits = {name: [] for name in heads}
    right = {name: [] for name in heads}
    with torch.inference_mode():
        for b in loader:
            base = net.run(b["image"])
            labels = b["label"]
            gt = np.stack([bx[0] for bx in b["boxes"]])
            for name, (wt, bias, *_rest) in heads.items():
                res = CamResult(logits=base.pooled() @ wt.T + bias, features=base.features,
                                weight=wt, bias=bias, pool=net.pool,
                                classes=[str(i) for i in range(len(bias))], inputs=base.inputs)
                scores[name].update(res, b, (h, w))
                maps = res.cams(classes=labels[:, None], size="input", normalize=True)[:, 0]
                hits[name].append(iou(paper_box(maps).numpy(), gt) >= 0.5)
                right[name].append((res.logits.argmax(1) == labels).numpy())
    out = {}
    for name in heads:
        rep = scores[name].report()
        out[name] = {"top1": 100 * float(np.concatenate(right[name]).mean()),
                     "gt_known_loc": 100 * float(np.concatenate(hits[name]).mean()),
                     "MaxBoxAccV2": rep["MaxBoxAccV2"],
                     "eval_gt_known_loc": rep["gt_known_loc"]}
    return out


def summarise(results: dict, heads: dict, ks, losses, draws: int) -> dict:
    rows = {}
    for k in ks:
        for loss in losses:
            keys = [(k, loss, d) for d in range(draws)]
            row = {}
            for m in ("top1", "gt_known_loc", "MaxBoxAccV2", "eval_gt_known_loc"):
                vals = np.array([results[key][m] for key in keys])
                row[m] = round(float(vals.mean()), 1)
                row[m + "_range"] = [round(float(vals.min()), 1), round(float(vals.max()), 1)]
            row["l2"] = [heads[key][2] for key in keys]
            row["holdout_accuracy"] = [round(heads[key][3], 1) for key in keys]
            row["fit_seconds"] = round(float(np.median([heads[key][4] for key in keys])), 2)
            rows[f"{loss} k={k}"] = row
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=int, default=1000, help="novel train split size")
    p.add_argument("--base-train", type=int, default=2400, help="base train split size")
    p.add_argument("--test", type=int, default=1000, help="test split sizes (novel and base)")
    p.add_argument("--ks", default="10,50,200")
    p.add_argument("--base-k", type=int, default=200, help="images per base class")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    ks, losses = [int(k) for k in a.ks.split(",")], ("softmax", "svm")
    net = camviz.load_model("demo", device="cpu")
    novel = fit_heads(net, f"demo-novel:train:{a.train}", ks, losses, a.draws)
    base = fit_heads(net, f"demo:train:{a.base_train}", [a.base_k], losses, 1)
    novel_root = camviz.ensure_split("test", a.test, classes="novel", progress=True)
    base_root = camviz.ensure_split("test", a.test, progress=True)
    res_novel = score_heads(net, novel_root, novel)
    own = {"demo": (net.head_weight, net.head_bias, None, None, 0.0)}
    own.update({("base", loss): base[(a.base_k, loss, 0)] for loss in losses})
    res_base = score_heads(net, base_root, own)
    _, _, boxes = read_split(novel_root)
    out = {
        "novel_test": a.test,
        "novel": summarise(res_novel, novel, ks, losses, a.draws),
        "demo_on_its_own_classes": {k: round(v, 1) for k, v in res_base["demo"].items()},
        f"refit_on_base_classes_k={a.base_k}": {loss: {k: round(v, 1) for k, v in
                                               res_base[("base", loss)].items()}
                                        for loss in losses},
        "baselines_novel_test": baselines(boxes),
        "draws": a.draws,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
