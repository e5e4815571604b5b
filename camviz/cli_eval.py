"""``camviz eval``: classification and weakly supervised localization scores of a GAP network.

``camviz eval --model demo --data demo:test`` runs the model over a dataset with ground truth
and reports top-1/top-5 classification, the CAM paper's GT-known / top-1 / top-5 localization
at its threshold (20% of the map's maximum, IoU >= 0.5), MaxBoxAcc at IoU 30/50/70 with
MaxBoxAccV2 (their mean) and MaxBoxAcc V1, and PxAP where the data has masks — with the WSOL
reference protocol (clovaai/wsolevaluation): the ground-truth class's map, bicubic to the
network input, min-max normalised; boxes scaled to the map with truncation; one CAM threshold
for the whole dataset.

Data specs: ``demo:SPLIT`` or ``demo:SPLIT:N`` (the demo world, generated once into the cache;
N defaults to 500), or ``METADATA_DIR`` / ``METADATA_DIR:IMAGE_ROOT`` (a wsolevaluation
metadata folder; images resolved under IMAGE_ROOT, default the metadata folder).

Example:
    $ camviz eval --model demo --data demo:test:200
    $ camviz eval --model resnet50 --data metadata/CUB/test:/data/CUB_200_2011/images --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from camviz.cli import demo_split, model_args
from camviz.datasets import WsolDataset, WsolMetadata, collate
from camviz.errors import CamvizError, DatasetError
from camviz.images import Preprocess
from camviz.localize import PAPER_THRESHOLD
from camviz.metrics import (
    BoxAccuracy,
    ClassicLocalization,
    PixelAP,
    default_cam_thresholds,
)
from camviz.result import min_max

DEMO_DEFAULT_N = 500


def resolve_eval_data(spec: str) -> WsolMetadata:
    """A data spec (``demo:SPLIT[:N]`` or ``METADATA_DIR[:IMAGE_ROOT]``) -> its metadata.

    Example:
        >>> try:
        ...     resolve_eval_data("/no/such/folder")
        ... except DatasetError as err:
        ...     print(str(err).split(";")[0])
        data /no/such/folder is not a folder
    """
    if spec.startswith("demo:"):
        return WsolMetadata(demo_split(spec, DEMO_DEFAULT_N))
    meta, root = Path(spec), None
    if not meta.is_dir() and ":" in spec:
        left, right = spec.split(":", 1)
        meta, root = Path(left), Path(right)
    if not meta.is_dir():
        raise DatasetError(
            f"data {spec} is not a folder; give demo:SPLIT or METADATA_DIR[:IMAGE_ROOT]"
        )
    return WsolMetadata(meta, image_root=root)


def eval_transform(net: Any, size: int | tuple[int, int] | None = None) -> Preprocess:
    """The reference's evaluation geometry: resize the whole image to the network input size
    (no crop), then the network's own normalisation.

    Example:
        >>> from camviz.gapnet import GapNet
        >>> from torch import nn
        >>> eval_transform(GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")).resize
        (224, 224)
    """
    tf = getattr(net, "transform", None)
    if size is None:
        size = tf.output_size if tf is not None and tf.output_size is not None else (224, 224)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tf is None:
        return Preprocess(resize=hw, crop=None)
    return Preprocess(resize=hw, crop=None, mean=tf.mean, std=tf.std)


class _Safe(Dataset):
    """Items that fail to load become None (reported), so one bad file never stops a run."""

    def __init__(self, ds: WsolDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Any:
        try:
            return self.ds[i]
        except CamvizError as err:
            return {"failed": self.ds.meta[i].image_id, "error": str(err)}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if "failed" not in it]
    bad = [(it["failed"], it["error"]) for it in items if "failed" in it]
    out = collate(good) if good else {}
    out["_failed"] = bad
    return out


def gt_maps(res: Any, labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The ground-truth classes' maps as the reference scores them: raw CAM (no bias), in
    float64 on the CPU, bicubic to ``size`` (H, W), min-max normalised per map (constant or NaN
    -> zeros). (B, H, W) float64 CPU tensor, ready for the metrics.

    Example:
        >>> from camviz.gapnet import GapNet
        >>> from torch import nn
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 3), device="cpu")
        >>> gt_maps(net.run(torch.rand(2, 3, 8, 8)), torch.tensor([0, 2]), (16, 16)).shape
        torch.Size([2, 16, 16])
    """
    raw = res.cams(labels.to(res.device)[:, None])  # (B, 1, h, w)
    # the reference works in float64 (t2n), then cv2 INTER_CUBIC: torch's bicubic in float64
    # gives the same values (to 1e-15 at 7 -> 224)
    raw = raw.detach().to("cpu", torch.float64)
    if tuple(raw.shape[-2:]) != tuple(size):
        raw = F.interpolate(raw, size=size, mode="bicubic", align_corners=False)
    return min_max(raw)[:, 0].clamp_(0, 1)


def evaluate(
    net: Any,
    data: WsolMetadata | WsolDataset,
    batch_size: int = 32,
    cam_step: float = 0.01,
    paper_threshold: float = PAPER_THRESHOLD,
    limit: int | None = None,
    progress: bool = True,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Run ``net`` over ``data`` and compute every localization score (see the module doc).

    Returns a dict: ``images``, ``failed`` (list of [image_id, error]), ``missing``,
    ``no_boxes`` (images of a box split without a box line: left out of the box scores),
    ``top1_cls``, ``top5_cls``, ``gt_known_loc``, ``top1_loc``, ``top5_loc`` (at
    ``paper_threshold``), ``MaxBoxAcc@30/50/70``, ``MaxBoxAccV2``, ``MaxBoxAccV1``,
    ``best_threshold`` per IoU, ``PxAP`` (None without masks), ``curves`` (accuracy per CAM
    threshold), ``pxap_curve`` (with masks: pixel ``precision`` and ``recall``, fractions per
    threshold, high to low, None where undefined), ``seconds``. Scores in percent.

    Example:
        >>> import camviz
        >>> out = evaluate(camviz.load_model("demo"), resolve_eval_data("demo:test:8"),
        ...                progress=False)  # doctest: +SKIP
        >>> sorted(out)[:3]  # doctest: +SKIP
        ['MaxBoxAcc@30', 'MaxBoxAcc@50', 'MaxBoxAcc@70']
    """
    t0 = time.perf_counter()
    tf = eval_transform(net)
    h, w = tf.resize  # type: ignore[misc]
    meta = data.meta if isinstance(data, WsolDataset) else data
    ds = WsolDataset(meta, transform=tf, map_size=(w, h))
    if not meta.has_boxes and not meta.has_masks:
        raise DatasetError(f"{meta.metadata_dir} has no localization.txt: nothing to score")
    idx = list(range(len(ds) if limit is None else min(limit, len(ds))))
    sub = torch.utils.data.Subset(_Safe(ds), idx)
    loader = DataLoader(sub, batch_size=batch_size, collate_fn=_collate, num_workers=num_workers)
    ts = default_cam_thresholds(cam_step)
    v2 = BoxAccuracy(ts, (30, 50, 70), multi_contour=True)
    v1 = BoxAccuracy(ts, (50,), multi_contour=False)
    classic = ClassicLocalization(paper_threshold)
    pxap = PixelAP(ts) if meta.has_masks else None
    failed: list[list[str]] = []
    no_gt: list[str] = []
    n_cls = top1 = top5_hits = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(idx), desc="camviz eval", unit="img", file=sys.stderr)
    with torch.inference_mode():
        for batch in loader:
            bad = [list(f) for f in batch.pop("_failed")]
            failed += bad
            if "image" in batch:
                res = net.run(batch["image"])
                labels = batch["label"]
                maps = gt_maps(res, labels, (h, w)).double().cpu().numpy()
                top5 = res.topk(min(5, res.logits.shape[1])).indices.cpu().numpy()
                for j, cam in enumerate(maps):
                    boxes = batch["boxes"][j]
                    label = int(labels[j])
                    n_cls += 1
                    top1 += int(top5[j][0] == label)
                    top5_hits += int(label in top5[j][:5].tolist())
                    if meta.has_boxes and len(boxes) == 0:
                        no_gt.append(batch["image_id"][j])
                    elif meta.has_boxes:
                        v2.update(cam, boxes)
                        v1.update(cam, boxes)
                        classic.update(cam, boxes, label, top5[j])
                    if pxap is not None and "mask" in batch:
                        pxap.update(cam, batch["mask"][j], batch["ignore"][j])
            if bar is not None:
                bar.update(len(batch.get("index", [])) + len(bad))
    if bar is not None:
        bar.close()
    out: dict[str, Any] = {
        "images": n_cls,
        "failed": failed,
        "missing": [list(m) for m in meta.missing],
        "no_boxes": no_gt,
        "top1_cls": top1 * 100.0 / n_cls if n_cls else None,
        "top5_cls": top5_hits * 100.0 / n_cls if n_cls else None,
    }
    if meta.has_boxes and v2.count:
        c = classic.compute()
        out.update({k: c[k] for k in ("gt_known_loc", "top1_loc", "top5_loc")})
        out["paper_threshold"] = paper_threshold
        r2, r1 = v2.compute(), v1.compute()
        for d in (30, 50, 70):
            out[f"MaxBoxAcc@{d}"] = r2[f"MaxBoxAcc@{d}"]
        out["MaxBoxAccV2"] = r2["MaxBoxAccV2"]
        out["MaxBoxAccV1"] = r1["MaxBoxAcc@50"]
        out["best_threshold"] = {f"V2@{d}": r2["best_threshold"][d] for d in (30, 50, 70)}
        out["best_threshold"]["V1@50"] = r1["best_threshold"][50]
        out["curves"] = {
            "cam_thresholds": [round(float(t), 6) for t in ts],
            **{f"V2@{d}": r2["curves"][d].tolist() for d in (30, 50, 70)},
            "V1@50": r1["curves"][50].tolist(),
        }
    out["PxAP"] = None
    if pxap is not None and pxap.count:
        px = pxap.compute()
        out["PxAP"] = px["PxAP"]
        # the pixel precision-recall curve (thresholds high to low; None where undefined)
        out["pxap_curve"] = {
            key: [None if not math.isfinite(v) else float(v) for v in px[key].tolist()]
            for key in ("precision", "recall")
        }
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _table(out: dict[str, Any], model: str, data: str) -> str:
    lines = [f"camviz eval: {model} on {data}: {out['images']} images"]
    if out["missing"]:
        lines.append(f"  missing (left out): {len(out['missing'])}, e.g. {out['missing'][0]}")
    if out["failed"]:
        lines.append(f"  failed to load: {len(out['failed'])}, e.g. {out['failed'][0]}")
    rows = [
        ("top-1 cls", "top1_cls"),
        ("top-5 cls", "top5_cls"),
        (f"GT-known loc @{out.get('paper_threshold', PAPER_THRESHOLD):g}", "gt_known_loc"),
        ("top-1 loc", "top1_loc"),
        ("top-5 loc", "top5_loc"),
        ("MaxBoxAcc@30", "MaxBoxAcc@30"),
        ("MaxBoxAcc@50", "MaxBoxAcc@50"),
        ("MaxBoxAcc@70", "MaxBoxAcc@70"),
        ("MaxBoxAccV2", "MaxBoxAccV2"),
        ("MaxBoxAcc (V1)", "MaxBoxAccV1"),
        ("PxAP", "PxAP"),
    ]
    for name, key in rows:
        if out.get(key) is not None:
            lines.append(f"  {name:<18} {out[key]:6.2f}")
    lines.append(f"  ({out['seconds']:.1f} s)")
    return "\n".join(lines)


def register(sub: Any) -> None:
    """Add the ``eval`` subcommand to camviz's argument parser.

    Example:
        >>> parser = argparse.ArgumentParser(); register(parser.add_subparsers())
        >>> parser.parse_args(["eval", "--data", "demo:test"]).batch_size
        32
    """

    p = sub.add_parser("eval", help="classification and WSOL localization scores on a dataset")
    model_args(p)
    p.add_argument("--data", required=True, help="demo:SPLIT[:N] or METADATA_DIR[:IMAGE_ROOT]")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="score only the first N images")
    p.add_argument("--cam-step", type=float, default=0.01, help="CAM threshold step")
    p.add_argument(
        "--threshold",
        type=float,
        default=PAPER_THRESHOLD,
        help="fixed threshold of the CAM paper's numbers",
    )
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    p.add_argument("--curves", action="store_true", help="include accuracy curves in the JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    """``camviz eval``: print the scores of ``--model`` on ``--data``."""
    from camviz.gapnet import load_model

    net = load_model(args.model, weights=args.weights, device=args.device)
    meta = resolve_eval_data(args.data)
    out = evaluate(
        net,
        meta,
        batch_size=args.batch_size,
        cam_step=args.cam_step,
        paper_threshold=args.threshold,
        limit=args.limit,
        progress=not args.no_progress,
        num_workers=args.workers,
    )
    if not args.curves:
        out.pop("curves", None)
        out.pop("pxap_curve", None)
    if args.json:
        out = {"model": args.model, "data": args.data, **out}
        print(json.dumps(out, allow_nan=False))
    else:
        print(_table(out, args.model, args.data))
    return 0 if out["images"] else 1


__all__ = ["evaluate", "resolve_eval_data", "eval_transform", "gt_maps", "register", "cmd_eval"]
