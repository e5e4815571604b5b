"""GAP conversion on the demo world: the FC baseline, its converted + fine-tuned twin, the GAP net.

Replicates the CAM paper's VGGnet-GAP experiment on ground truth (held-out test split, default
1000 images):
- "demo-fc": the fully connected baseline (camviz.demo.fcnet.FcNet): top-1 only, since camviz
  refuses it (the NotAGapNetwork message is printed);
- "demo-fc-gap": the same net after camviz.to_gap and camviz.fine_tune;
- "demo": the bundled GAP net, trained as one;
- the centred box of the best single size for the split (an oracle-size baseline).
For the GAP nets: camviz.evaluate (the wsolevaluation protocol: bicubic maps,
MaxBoxAccV2 at IoU 30/50/70, PxAP) and the CAM paper's box as in benchmarks/demo_quality.py
(bilinear maps, largest region above 20% of the maximum, IoU >= 0.5: GT-known loc).

    python benchmarks/convert_quality.py [--n 1000] [--weights DIR] [--json out.json]

``--weights DIR``: the output folder of ``python -m camviz.demo.train_fc --out DIR`` (default:
the bundled weights).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from demo_quality import baselines, read_split
from demo_quality import evaluate as paper_box_scores
from PIL import Image

import camviz
from camviz.convert import load_converted
from camviz.datasets import WsolMetadata
from camviz.demo.fcnet import FC_FILE, GAP_FILE, load_fcnet
from camviz.demo.net import demo_transform
from camviz.evaluate import evaluate


@torch.no_grad()
def fc_top1(model: torch.nn.Module, root: Path, ids: list[str], labels, batch: int = 100) -> float:
    tf, right = demo_transform(), 0
    for i in range(0, len(ids), batch):
        x = torch.stack([tf(Image.open(root / p).convert("RGB")) for p in ids[i : i + batch]])
        right += int((model(x).argmax(1).numpy() == labels[i : i + batch]).sum())
    return round(100.0 * right / len(ids), 2)


def gap_scores(net: camviz.GapNet, name: str, root: Path, ids, labels, boxes) -> dict:
    ev = evaluate(net, WsolMetadata(root), progress=False)
    keep = ("top1_cls", "gt_known_loc", "top1_loc", "MaxBoxAccV2", "PxAP")
    out = {f"eval_{k}": round(ev[k], 2) for k in keep}
    camviz.register_model(f"_bench_{name}", lambda weights, device: net)
    paper = paper_box_scores(f"_bench_{name}", root, ids, labels, boxes)
    out.update({f"paper_box_{k}": paper[k] for k in ("top1_acc", "gt_known_loc", "mean_iou")})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--split", default="test")
    p.add_argument("--weights", default=None, help="folder of train_fc weights (default bundled)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_grad_enabled(False)
    root = camviz.ensure_split(a.split, a.n, progress=True)
    ids, labels, boxes = read_split(root)
    w = Path(a.weights) if a.weights else None
    out: dict = {"split": a.split, "n": len(ids), "baselines": baselines(boxes)}
    fc = load_fcnet(w / FC_FILE if w else "DEFAULT")
    try:
        camviz.GapNet.from_model(fc, device="cpu", probe_size=128)
    except camviz.NotAGapNetwork as err:
        out["demo-fc refused"] = str(err)
    out["demo-fc"] = {"top1_cls": fc_top1(fc, root, ids, labels)}
    gap = load_converted(w / GAP_FILE, device="cpu") if w else camviz.load_model(
        "demo-fc-gap", device="cpu")
    out["demo-fc-gap"] = gap_scores(gap, "fc_gap", root, ids, labels, boxes)
    out["demo"] = gap_scores(camviz.load_model("demo", device="cpu"), "demo", root, ids, labels,
                             boxes)
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
