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
run the network again on perturbed images). Images that fail to load (image or mask), or whose
label is not one of the network's classes, are reported with their id and skipped.

Inside a torch.distributed process group each rank scores its shard and every rank returns the
scores of the whole dataset (:class:`Scores` are sums: hit counts and histograms, merged
exactly, so the numbers are those of one process); with ``checkpoint=FOLDER`` the partial
scores are written every ``checkpoint_every`` batches and a rerun resumes from them.

Example:
    >>> from torch import nn
    >>> from camviz.gapnet import GapNet
    >>> eval_transform(GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 2), device="cpu")).resize
    (224, 224)
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from camviz.checkpoints import Checkpoint
from camviz.datasets import Prepared, SkipBad, WsolDataset, WsolMetadata, collate
from camviz.distributed import Heartbeat, merge_on_all, shard, share, together, world
from camviz.errors import CamvizError, DatasetError
from camviz.faithfulness import EvalFaithfulness
from camviz.fingerprints import dataset_fingerprint, model_fingerprint
from camviz.images import Preprocess
from camviz.localize import PAPER_THRESHOLD
from camviz.maps import min_max
from camviz.metrics import BoxAccuracy, ClassicLocalization, PixelAP, default_cam_thresholds
from camviz.result import CamResult

if TYPE_CHECKING:
    from camviz.gapnet import GapNet

__all__ = ["evaluate", "eval_transform", "gt_maps", "Scores"]


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

    def state_dict(self) -> dict[str, Any]:
        """Everything accumulated, JSON-ready and exact (counts, histograms, fractions).

        Example:
            >>> Scores(True, False).state_dict()["v2"]["count"]
            0
        """
        px = self.pxap
        return {
            "images": self.images, "top1": self.top1, "top5": self.top5,
            "failed": self.failed, "no_boxes": self.no_boxes,
            "size_mismatch": self.size_mismatch,
            "v2": _box_state(self.v2), "v1": _box_state(self.v1),
            "classic": {"n": self.classic.n, "hits": dict(self.classic.hits)},
            "pxap": None if px is None else {"true": px.true_hist.tolist(),
                                             "false": px.false_hist.tolist(), "count": px.count},
            "faith": self.faith.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> Scores:
        """Restore :meth:`state_dict` (into Scores made with the same settings); returns self.

        Example:
            >>> a = Scores(True, False); a.top1 = 3
            >>> Scores(True, False).load_state_dict(a.state_dict()).top1
            3
        """
        self.images, self.top1, self.top5 = state["images"], state["top1"], state["top5"]
        self.failed, self.no_boxes = list(state["failed"]), list(state["no_boxes"])
        self.size_mismatch = list(state["size_mismatch"])
        for acc, got in ((self.v2, state["v2"]), (self.v1, state["v1"])):
            acc.count = int(got["count"])
            acc.num_correct = {int(d): np.asarray(v, dtype=np.float64)
                               for d, v in got["num_correct"].items()}
        self.classic.n, self.classic.hits = state["classic"]["n"], dict(state["classic"]["hits"])
        if (self.pxap is None) != (state["pxap"] is None):
            raise CamvizError("scores state made with other settings (masks)")
        if self.pxap is not None:
            self.pxap.true_hist = np.asarray(state["pxap"]["true"], dtype=np.float64)
            self.pxap.false_hist = np.asarray(state["pxap"]["false"], dtype=np.float64)
            self.pxap.count = int(state["pxap"]["count"])
        self.faith.load_state_dict(state["faith"])
        return self

    def merge(self, other: Scores) -> Scores:
        """Add the scores of a later shard (its failures are listed after this one's); returns
        self. Every part is a count, so the merged report equals one pass over both.

        Example:
            >>> a, b = Scores(True, False), Scores(True, False)
            >>> a.images, b.images = 2, 3
            >>> a.merge(b).images
            5
        """
        self.images += other.images
        self.top1 += other.top1
        self.top5 += other.top5
        self.failed += other.failed
        self.no_boxes += other.no_boxes
        self.size_mismatch += other.size_mismatch
        for mine, theirs in ((self.v2, other.v2), (self.v1, other.v1)):
            mine.count += theirs.count
            for d in mine.num_correct:
                mine.num_correct[d] = mine.num_correct[d] + theirs.num_correct[d]
        self.classic.n += other.classic.n
        for k, v in other.classic.hits.items():
            self.classic.hits[k] += v
        if self.pxap is not None and other.pxap is not None:
            self.pxap.true_hist = self.pxap.true_hist + other.pxap.true_hist
            self.pxap.false_hist = self.pxap.false_hist + other.pxap.false_hist
            self.pxap.count += other.pxap.count
        self.faith.merge(other.faith)
        return self

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
            try:
                px = self.pxap.compute()
            except CamvizError as err:  # e.g. every mask empty: the other scores still stand
                out["PxAP_error"] = str(err)
            else:
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


def _box_state(acc: Any) -> dict[str, Any]:
    return {"count": acc.count, "num_correct": {str(d): v.tolist()
                                                for d, v in acc.num_correct.items()}}


class _Labelled(Dataset):
    """A WsolDataset whose items with a label outside ``classes`` fail (before any read)."""

    def __init__(self, ds: WsolDataset, classes: int) -> None:
        self.ds, self.classes = ds, classes

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Any:
        label = self.ds.meta[i].label
        if not 0 <= label < self.classes:
            what = "has no class label" if label == -1 else f"has label {label}"
            raise DatasetError(f"{what}, not one of the network's {self.classes} classes "
                               f"(0..{self.classes - 1}); check class_labels.txt")
        return self.ds[i]


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
    autocast: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 50,
    distributed: bool = True,
) -> dict[str, Any]:
    """Run ``net`` over ``data`` and compute every localization score (see the module doc).

    Images are read in their stored frame (no EXIF rotation: the frame boxes are drawn in, as
    the reference reads them); ``size_mismatch`` lists [image_id, listed size, stored size]
    where image_sizes.txt disagrees with the file.

    Returns a dict: ``images``, ``failed`` (list of [image_id, error]), ``missing``,
    ``no_boxes`` (images of a box split without a box line: left out of the box scores),
    ``top1_cls``, ``top5_cls``, ``gt_known_loc``, ``top1_loc``, ``top5_loc`` (at
    ``paper_threshold``), ``MaxBoxAcc@30/50/70``, ``MaxBoxAccV2``, ``MaxBoxAccV1``,
    ``best_threshold`` per IoU, ``PxAP`` (None without masks; ``PxAP_error`` says why when the
    masks give none), ``curves`` (accuracy per CAM threshold), ``pxap_curve`` (with masks: pixel
    ``precision`` and ``recall``, fractions per threshold, high to low, None where undefined),
    ``seconds``. All scores in percent. Beside them (:mod:`camviz.faithfulness`, on the same
    maps): ``pointing_game_box`` / ``pointing_game_mask`` (None without that ground truth) with
    details in ``pointing_game``; with ``faithfulness`` also ``deletion_auc``, ``insertion_auc``
    (``faithfulness_steps`` steps), ``average_drop``, ``increase_in_confidence``,
    ``average_gain`` of the ground-truth class. ``autocast`` ("bf16", "fp16") runs the network's
    pass in reduced precision. ``checkpoint``: a folder for the partial scores (every
    ``checkpoint_every`` batches; removed when done); ``distributed``: inside an initialised
    process group, score this rank's shard and merge (False: this process scores all).

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
    if batch_size < 1:
        raise CamvizError(f"batch_size must be at least 1, got {batch_size}")
    tf = eval_transform(net)
    h, w = tf.resize  # type: ignore[misc]
    meta = data.meta if isinstance(data, WsolDataset) else data
    if not meta.has_boxes and not meta.has_masks:
        raise DatasetError(f"{meta.metadata_dir} has no localization.txt: nothing to score")
    ds = WsolDataset(meta, transform=tf, map_size=(w, h))
    idx = list(range(len(ds) if limit is None else min(limit, len(ds))))
    rank, size = world(distributed)
    items = shard(len(idx), batch_size, rank, size)

    def new_scores() -> Scores:
        faith = EvalFaithfulness(net, perturb=faithfulness, steps=faithfulness_steps)
        return Scores(meta.has_boxes, meta.has_masks, cam_step, paper_threshold, faith)

    ckpt = None
    if checkpoint is not None:
        ids = share(lambda: {"model": model_fingerprint(net), "dataset": dataset_fingerprint(ds)},
                    "camviz eval")
        settings = {"batch_size": batch_size, "cam_step": cam_step, "limit": limit,
                    "paper_threshold": paper_threshold, "faithfulness": faithfulness,
                    "faithfulness_steps": faithfulness_steps, "autocast": autocast}
        ckpt = Checkpoint(checkpoint, "eval", {**ids, "settings": settings,
                                               "shard": [items.start, items.stop]}, rank, size)
    with together("camviz eval"):
        scores = _score_shard(net, ds, meta, idx[items.start:items.stop], new_scores(),
                              batch_size, num_workers, progress, autocast, ckpt,
                              checkpoint_every, (h, w))
    if size > 1:
        scores = merge_on_all(scores, lambda s: json.dumps(s.state_dict()).encode(),
                              lambda b: new_scores().load_state_dict(json.loads(b)),
                              lambda a, b: a.merge(b))
    out = scores.report()
    out["missing"] = [list(m) for m in meta.missing]
    out["seconds"] = round(time.perf_counter() - t0, 3)
    with together("camviz eval: finishing"):
        pass
    if ckpt is not None:
        ckpt.remove()
    return out


def _score_shard(net: GapNet, ds: WsolDataset, meta: WsolMetadata, idx: list[int],
                 scores: Scores, batch_size: int, num_workers: int, progress: bool,
                 autocast: str | None, ckpt: Checkpoint | None, every: int,
                 size: tuple[int, int]) -> Scores:
    """Score the items ``idx`` of ``ds`` into ``scores``, resuming from and writing ``ckpt``."""
    done = 0
    hb = Heartbeat("camviz eval", every or 50)
    try:
        got = ckpt.load() if ckpt is not None else None
        if got is not None:
            scores.load_state_dict(json.loads(str(got[0]["scores"])))
            done = int(got[1]["done"])
    except BaseException:
        hb.start(None)
        raise
    hb.start(-(-(len(idx) - done) // batch_size))
    safe = SkipBad(Prepared(_Labelled(ds, net.num_classes)), describe=lambda i: meta[i].image_id)
    loader = DataLoader(Subset(safe, idx[done:]), batch_size=batch_size, collate_fn=collate,
                        num_workers=num_workers)
    bar = _bar(progress, len(idx), done)
    try:
        with torch.inference_mode():
            for b, batch in enumerate(loader):
                scores.failed += [list(f) for f in batch["failed"]]
                if "image" in batch:
                    scores.update(net.run(batch["image"], autocast=autocast), batch, size)
                n = len(batch.get("label", [])) + len(batch["failed"])
                done += n
                bar.update(n)
                if ckpt is not None and every and (b + 1) % every == 0 and done < len(idx):
                    ckpt.save({"scores": np.array(json.dumps(scores.state_dict()))},
                              {"done": done})
                hb.batch_done()
    except BaseException:
        hb.failed()
        raise
    finally:
        bar.close()
    return scores


def _bar(progress: bool, total: int, initial: int = 0) -> Any:
    from tqdm.auto import tqdm

    rank, size = world()
    desc = "camviz eval" if size == 1 else f"camviz eval (rank {rank} of {size})"
    return tqdm(total=total, initial=initial, desc=desc, unit="img", file=sys.stderr,
                disable=not progress or rank != 0)
