"""``camviz eval``: classification and WSOL localization scores of a network on a dataset.

``camviz eval --model demo --data demo:test`` prints top-1/top-5 classification, the CAM
paper's GT-known / top-1 / top-5 localization, MaxBoxAcc@30/50/70, MaxBoxAccV2, V1 and PxAP
(see :func:`camviz.evaluate.evaluate`). Data: ``demo:SPLIT[:N]`` or
``METADATA_DIR[:IMAGE_ROOT]`` (a wsolevaluation metadata folder). With ``--checkpoint DIR`` the
partial scores are written every ``--checkpoint-every`` batches and a rerun resumes; under
``torchrun --nproc_per_node N -m camviz eval ...`` every process scores its shard and rank 0
prints the scores of the whole dataset.

Example:
    $ camviz eval --model demo --data demo:test:200 --faithfulness
    $ camviz eval --model resnet50 --data metadata/CUB/test:/data/CUB_200_2011/images --json
    $ torchrun --nproc_per_node 4 -m camviz eval --model resnet50 --data ... --checkpoint ck
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from camviz.cli.common import (
    check_out_dir,
    data_arg,
    model_args,
    nonnegative_int,
    open_model,
    positive_int,
)
from camviz.datasets import resolve_metadata
from camviz.distributed import joined, world
from camviz.evaluate import evaluate
from camviz.localize import PAPER_THRESHOLD

__all__ = ["register", "cmd_eval"]


def _table(out: dict[str, Any], model: str, data: str) -> str:
    lines = [f"camviz eval: {model} on {data}: {out['images']} images"]
    if out["missing"]:
        lines.append(f"  missing (left out): {len(out['missing'])}, e.g. {out['missing'][0]}")
    if out["failed"]:
        lines.append(f"  failed (left out): {len(out['failed'])}, e.g. {out['failed'][0]}")
    if out.get("PxAP_error"):
        lines.append(f"  PxAP: none ({out['PxAP_error']})")
    if out.get("size_mismatch"):
        lines.append(f"  stored size differs from image_sizes.txt: {len(out['size_mismatch'])}, "
                     f"e.g. {out['size_mismatch'][0]} (boxes were scaled from the listed size)")
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
        ("pointing game box", "pointing_game_box"),
        ("pointing game mask", "pointing_game_mask"),
        ("deletion AUC", "deletion_auc"),
        ("insertion AUC", "insertion_auc"),
        ("average drop", "average_drop"),
        ("incr. in conf.", "increase_in_confidence"),
        ("average gain", "average_gain"),
    ]
    for name, key in rows:
        if out.get(key) is not None:
            digits = 4 if key.endswith("_auc") else 2  # AUCs are fractions, the rest percent
            lines.append(f"  {name:<18} {out[key]:6.{digits}f}")
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
    data_arg(p, "METADATA_DIR[:IMAGE_ROOT]")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--limit", type=positive_int, default=None, help="score only the first N images")
    p.add_argument("--cam-step", type=float, default=0.01, help="CAM threshold step")
    p.add_argument(
        "--threshold",
        type=float,
        default=PAPER_THRESHOLD,
        help="fixed threshold of the CAM paper's numbers",
    )
    p.add_argument("--workers", type=nonnegative_int, default=0,
                   help="DataLoader worker processes")
    p.add_argument(
        "--faithfulness",
        action="store_true",
        help="also deletion/insertion AUC, average drop/gain, increase in confidence (runs the "
        "network on perturbed images: about 2 x steps + 1 passes per image)",
    )
    p.add_argument("--faithfulness-steps", type=positive_int, default=50,
                   help="deletion/insertion steps")
    p.add_argument("--autocast", choices=["bf16", "fp16"], default=None,
                   help="run the network's pass in reduced precision (maps stay float32)")
    p.add_argument("--checkpoint", default=None,
                   help="folder for the partial scores; a rerun with the same arguments resumes")
    p.add_argument("--checkpoint-every", type=nonnegative_int, default=50,
                   help="write the partial scores every N batches (0: never)")
    p.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    p.add_argument("--curves", action="store_true", help="include accuracy curves in the JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    """``camviz eval``: print the scores of ``--model`` on ``--data`` (under torchrun: every
    rank scores its shard, rank 0 prints)."""
    if args.checkpoint is not None:
        check_out_dir(args.checkpoint, "--checkpoint")
    with joined(args.device) as args.device:
        net = open_model(args)
        meta = resolve_metadata(args.data)
        out = evaluate(
            net,
            meta,
            batch_size=args.batch_size,
            cam_step=args.cam_step,
            paper_threshold=args.threshold,
            limit=args.limit,
            progress=not args.no_progress,
            num_workers=args.workers,
            faithfulness=args.faithfulness,
            faithfulness_steps=args.faithfulness_steps,
            autocast=args.autocast,
            checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every,
        )
        if world()[0] != 0:
            return 0 if out["images"] else 1
    if not args.curves:
        out.pop("curves", None)
        out.pop("pxap_curve", None)
    if args.json:
        out = {"model": args.model, "data": args.data, **out}
        print(json.dumps(out, allow_nan=False))
    else:
        print(_table(out, args.model, args.data))
    return 0 if out["images"] else 1
