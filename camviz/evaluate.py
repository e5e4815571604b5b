"""Classification and weakly supervised localization scores of a GAP network on a dataset.

:func:`evaluate` runs the network over a dataset with ground truth and computes top-1/top-5
classification, the CAM paper's GT-known / top-1 / top-5 localization at its threshold (20% of
the map's maximum, IoU >= 0.5), MaxBoxAcc at IoU 30/50/70 with MaxBoxAccV2 (their mean) and
MaxBoxAcc V1, and PxAP where the data has masks — with the WSOL reference protocol
(clovaai/wsolevaluation): the ground-truth class's map, bicubic to the network input, min-max
normalised; boxes scaled to the map with truncation; one CAM threshold for the whole dataset.
Beside them, on the same maps (:mod:`camviz.faithfulness`): the pointing game (15-pixel
tolerance) on the boxes and on the masks, and with ``faithfulness=True`` deletion and insertion
AUCs, average drop, increase in confidence and average gain of the ground-truth class (these
run the network again on perturbed images). Images that fail to load are reported and skipped.

Example:
    >>> from torch import nn
    >>> from camviz.gapnet import GapNet
    >>> eval_transform(GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")).resize
    (224, 224)
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from camviz.datasets import SkipBad, WsolDataset, WsolMetadata, collate
from camviz.errors import DatasetError
from camviz.faithfulness import EvalFaithfulness
from camviz.images import Preprocess
from camviz.localize import PAPER_THRESHOLD
from camviz.maps import min_max
from camviz.metrics import BoxAccuracy, ClassicLocalization, PixelAP, default_cam_thresholds
from camviz.result import CamResult

if TYPE_CHECKING:
    from camviz.gapnet import GapNet

__all__ = ["evaluate", "eval_transform", "gt_maps"]


def eval_transform(net: GapNet, size: int | tuple[int, int] | None = None) -> Preprocess:
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


def gt_maps(res: CamResult, labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
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




class Scores:
    """What :func:`evaluate` accumulates over batches: classification hits, the CAM paper's
    localization, MaxBoxAcc V1 and V2, PxAP. Every part is a sum (hit counts, histograms), so
    states of disjoint shards add up to the state of the whole dataset.

    Example:
        >>> s = Scores(has_boxes=True, has_masks=False)
        >>> s.images, s.report()["top1_cls"]
        (0, None)
    """

    def __init__(self, has_boxes: bool, has_masks: bool, cam_step: float = 0.01,
                 paper_threshold: float = PAPER_THRESHOLD,
                 faith: EvalFaithfulness | None = None) -> None:
        self.has_boxes, self.has_masks = has_boxes, has_masks
        self.faith = faith or EvalFaithfulness(None, perturb=False)
        self.thresholds = default_cam_thresholds(cam_step)
        self.v2 = BoxAccuracy(self.thresholds, (30, 50, 70), multi_contour=True)
        self.v1 = BoxAccuracy(self.thresholds, (50,), multi_contour=False)
        self.classic = ClassicLocalization(paper_threshold)
        self.pxap = PixelAP(self.thresholds) if has_masks else None
        self.images = self.top1 = self.top5 = 0
        self.failed: list[list[Any]] = []
        self.no_boxes: list[str] = []
        self.size_mismatch: list[list[Any]] = []

    def update(self, res: CamResult, batch: dict[str, Any], size: tuple[int, int]) -> None:
        """Score one batch (a :func:`~camviz.datasets.collate` dict) from its pass ``res``."""
        labels = batch["label"]
        maps_t = gt_maps(res, labels, size)
        self.faith.update(res, maps_t, labels, batch["boxes"] if self.has_boxes else None,
                          batch.get("mask") if self.has_masks else None)
        maps = maps_t.numpy()
        top5 = res.topk(min(5, res.logits.shape[1])).indices.cpu().numpy()
        for j, cam in enumerate(maps):
            boxes, label = batch["boxes"][j], int(labels[j])
            if tuple(batch["size"][j]) != tuple(batch["stored_size"][j]):
                self.size_mismatch.append([batch["image_id"][j], list(batch["size"][j]),
                                           list(batch["stored_size"][j])])
            self.images += 1
            self.top1 += int(top5[j][0] == label)
            self.top5 += int(label in top5[j][:5].tolist())
            if self.has_boxes and len(boxes) == 0:
                self.no_boxes.append(batch["image_id"][j])
            elif self.has_boxes:
                self.v2.update(cam, boxes)
                self.v1.update(cam, boxes)
                self.classic.update(cam, boxes, label, top5[j])
            if self.pxap is not None and "mask" in batch:
                self.pxap.update(cam, batch["mask"][j], batch["ignore"][j])

    def report(self) -> dict[str, Any]:
        """The scores so far (see :func:`evaluate` for the keys), in percent."""
        n = self.images
        out: dict[str, Any] = {
            "images": n,
            "failed": self.failed,
            "no_boxes": self.no_boxes,
            "size_mismatch": self.size_mismatch,
            "top1_cls": self.top1 * 100.0 / n if n else None,
            "top5_cls": self.top5 * 100.0 / n if n else None,
        }
        if self.has_boxes and self.v2.count:
            out.update(self._box_scores())
        out["PxAP"] = None
        if self.pxap is not None and self.pxap.count:
            px = self.pxap.compute()
            out["PxAP"] = px["PxAP"]
            # the pixel precision-recall curve (thresholds high to low; None where undefined)
            out["pxap_curve"] = {
                key: [None if not math.isfinite(v) else float(v) for v in px[key].tolist()]
                for key in ("precision", "recall")
            }
        out.update(self.faith.compute())
        return out

    def _box_scores(self) -> dict[str, Any]:
        c = self.classic.compute()
        out: dict[str, Any] = {k: c[k] for k in ("gt_known_loc", "top1_loc", "top5_loc")}
        out["paper_threshold"] = self.classic.threshold
        r2, r1 = self.v2.compute(), self.v1.compute()
        for d in (30, 50, 70):
            out[f"MaxBoxAcc@{d}"] = r2[f"MaxBoxAcc@{d}"]
        out["MaxBoxAccV2"] = r2["MaxBoxAccV2"]
        out["MaxBoxAccV1"] = r1["MaxBoxAcc@50"]
        out["best_threshold"] = {f"V2@{d}": r2["best_threshold"][d] for d in (30, 50, 70)}
        out["best_threshold"]["V1@50"] = r1["best_threshold"][50]
        out["curves"] = {
            "cam_thresholds": [round(float(t), 6) for t in self.thresholds],
            **{f"V2@{d}": r2["curves"][d].tolist() for d in (30, 50, 70)},
            "V1@50": r1["curves"][50].tolist(),
        }
        return out


def evaluate(
    net: GapNet,
    data: WsolMetadata | WsolDataset,
    batch_size: int = 32,
    cam_step: float = 0.01,
    paper_threshold: float = PAPER_THRESHOLD,
    limit: int | None = None,
    progress: bool = True,
    num_workers: int = 0,
    faithfulness: bool = False,
    faithfulness_steps: int = 50,
) -> dict[str, Any]:
    """Run ``net`` over ``data`` and compute every localization score (see the module doc).

    Images are read in their stored frame (no EXIF rotation: the frame boxes are drawn in, as
    the reference reads them); ``size_mismatch`` lists [image_id, listed size, stored size]
    where image_sizes.txt disagrees with the file.

    Returns a dict: ``images``, ``failed`` (list of [image_id, error]), ``missing``,
    ``no_boxes`` (images of a box split without a box line: left out of the box scores),
    ``top1_cls``, ``top5_cls``, ``gt_known_loc``, ``top1_loc``, ``top5_loc`` (at
    ``paper_threshold``), ``MaxBoxAcc@30/50/70``, ``MaxBoxAccV2``, ``MaxBoxAccV1``,
    ``best_threshold`` per IoU, ``PxAP`` (None without masks), ``curves`` (accuracy per CAM
    threshold), ``pxap_curve`` (with masks: pixel ``precision`` and ``recall``, fractions per
    threshold, high to low, None where undefined), ``seconds``. All scores in percent. Beside
    them (:mod:`camviz.faithfulness`, on the same maps): ``pointing_game_box`` /
    ``pointing_game_mask`` (None without that ground truth) with details in ``pointing_game``;
    with ``faithfulness`` also ``deletion_auc``, ``insertion_auc`` (``faithfulness_steps``
    steps), ``average_drop``, ``increase_in_confidence``, ``average_gain`` of the ground-truth
    class.

    Example:
        >>> from pathlib import Path
        >>> from camviz.models import load_model
        >>> fixture = Path(__file__).parents[1] / "data" / "demo-fixture"
        >>> out = evaluate(load_model("demo", device="cpu"), WsolMetadata(fixture),
        ...                progress=False)
        >>> out["images"], round(out["MaxBoxAccV2"], 1) > 0
        (32, True)
    """
    t0 = time.perf_counter()
    tf = eval_transform(net)
    h, w = tf.resize  # type: ignore[misc]
    meta = data.meta if isinstance(data, WsolDataset) else data
    if not meta.has_boxes and not meta.has_masks:
        raise DatasetError(f"{meta.metadata_dir} has no localization.txt: nothing to score")
    ds = WsolDataset(meta, transform=tf, map_size=(w, h))
    idx = list(range(len(ds) if limit is None else min(limit, len(ds))))
    safe = SkipBad(ds, describe=lambda i: meta[i].image_id)
    loader = DataLoader(Subset(safe, idx), batch_size=batch_size, collate_fn=collate,
                        num_workers=num_workers)
    faith = EvalFaithfulness(net, perturb=faithfulness, steps=faithfulness_steps)
    scores = Scores(meta.has_boxes, meta.has_masks, cam_step, paper_threshold, faith)
    bar = _bar(progress, len(idx))
    with torch.inference_mode():
        for batch in loader:
            scores.failed += [list(f) for f in batch["failed"]]
            if "image" in batch:
                scores.update(net.run(batch["image"]), batch, (h, w))
            bar.update(len(batch.get("label", [])) + len(batch["failed"]))
    bar.close()
    out = scores.report()
    out["missing"] = [list(m) for m in meta.missing]
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _bar(progress: bool, total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="camviz eval", unit="img", file=sys.stderr,
                disable=not progress)
