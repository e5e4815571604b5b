"""``camviz fine-tune``: convert a network to GAP and fine-tune it on a labelled dataset.

``camviz fine-tune --model vgg16 --to-gap --data DATA --out model.safetensors`` converts the
model with :func:`camviz.convert.to_gap` (a new head for the dataset's classes), fine-tunes it
with :func:`camviz.finetune.fine_tune` and writes one safetensors file holding the weights and
how to rebuild the network; ``camviz.convert.load_converted("model.safetensors")`` gives it back
as a GapNet. After every epoch a checkpoint (``OUT.ckpt`` unless ``--checkpoint``) is written;
rerunning the same command after an interruption resumes from it, and a checkpoint of another
command is refused. ``--model`` may also be a file this command wrote (fine-tuned further, no
``--to-gap``).

Data specs: ``demo:SPLIT[:N]`` (the demo world) or a folder with class labels (the demo /
wsolevaluation layout; ``classes.txt`` names the classes), as for ``camviz scan``.

Example:
    $ camviz fine-tune --model demo-fc --to-gap --data demo:train:2000 --out fc.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from camviz.cli.common import check_out_file, nonnegative_int, positive_int, weights_arg
from camviz.convert import meta_transform, read_converted, save_converted, to_gap
from camviz.datasets import resolve_data
from camviz.errors import CamvizError
from camviz.files import remove_stale_temps
from camviz.finetune import dataset_classes, fine_tune
from camviz.gapnet import resolve_device
from camviz.sources import load_source

_SETTINGS = ("batch_size", "optimizer", "momentum", "weight_decay", "new_lr_mult", "warmup",
             "label_smoothing", "seed", "steps_per_epoch", "freeze_epochs")


def register(sub: Any) -> None:
    """Add the ``fine-tune`` subcommand to camviz's argument parser.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(); register(parser.add_subparsers())
        >>> a = parser.parse_args(["fine-tune", "--model", "vgg16", "--to-gap", "--data",
        ...                        "demo:train", "--out", "m.safetensors"])
        >>> a.to_gap, a.width, a.epochs
        (True, 1024, 5)
    """
    p = sub.add_parser("fine-tune", help="convert a network to GAP and fine-tune it")
    p.add_argument("--model", required=True,
                   help="torchvision name, timm/NAME, demo-fc, or a .safetensors file this "
                        "command wrote")
    p.add_argument("--weights", default="DEFAULT", type=weights_arg,
                   help="weights name, DEFAULT, or none for random weights")
    p.add_argument("--to-gap", action="store_true",
                   help="convert first (the CAM paper's recipe; MobileNetV3: head moved)")
    p.add_argument("--width", type=positive_int, default=1024, help="units of the new conv layer")
    p.add_argument("--data", required=True, help="demo:SPLIT[:N] or a labelled dataset folder")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--checkpoint", default=None, help="resume file (default: OUT.ckpt)")
    p.add_argument("--epochs", type=positive_int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--new-lr-mult", type=float, default=10.0,
                   help="learning rate of the new layers relative to the pretrained ones")
    p.add_argument("--warmup", type=float, default=0.05, help="fraction of steps warming up")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--autocast", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps-per-epoch", type=positive_int, default=None)
    p.add_argument("--freeze-epochs", type=nonnegative_int, default=0,
                   help="first epochs that train the new layers only")
    p.add_argument("--workers", type=nonnegative_int, default=0,
                   help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_fine_tune)


def cmd_fine_tune(args: argparse.Namespace) -> int:
    """``camviz fine-tune``: convert (``--to-gap``), fine-tune, write ``--out``."""
    out = check_out_file(args.out)
    ckpt = check_out_file(args.checkpoint or out.with_name(out.name + ".ckpt"), "--checkpoint")
    resolve_device(args.device)  # a bad --device fails here, not after converting
    for f in (out, ckpt):
        remove_stale_temps(f.parent, name=f.name, recursive=False)
    src, model, origin = None, None, {"model": args.model, "weights": args.weights}
    if args.model.endswith(".safetensors") or Path(args.model).is_file():
        if args.to_gap:
            raise CamvizError(f"{args.model} is a converted network already: drop --to-gap")
        model, meta = read_converted(args.model)
        transform = meta_transform(meta)
    elif not args.to_gap:
        raise CamvizError(
            f"camviz fine-tune fine-tunes networks converted to GAP: add --to-gap to convert "
            f"{args.model} first (or give a .safetensors file this command wrote)")
    else:
        torch.manual_seed(args.seed)  # random weights (--weights none) are the same each run
        src = load_source(args.model, args.weights)
        transform = src.transform
    data = resolve_data(args.data, transform, need="labels")
    classes = dataset_classes(data)
    if src is not None:  # a head for the data's classes, unless the source has exactly them
        torch.manual_seed(args.seed)  # so the new layers start the same on every rerun
        model = to_gap(src.model, width=args.width,
                       num_classes=None if src.classes == classes else len(classes))
        origin["width"] = args.width
    elif model.fc.out_features != len(classes):
        raise CamvizError(f"{args.model} has {model.fc.out_features} classes, {args.data} has "
                          f"{len(classes)}; convert the original network again with --to-gap")
    settings = {k: getattr(args, k) for k in _SETTINGS}
    net = fine_tune(model, data, epochs=args.epochs, lr=args.lr, classes=classes,
                    transform=transform, checkpoint=ckpt, device=args.device,
                    num_workers=args.workers, progress=not args.no_progress,
                    autocast=None if args.autocast == "none" else args.autocast, **settings)
    training = {"data": args.data, "epochs": args.epochs, "lr": args.lr,
                "autocast": args.autocast, **settings, **origin, "history": net.history}
    save_converted(net.model, out, classes=classes, transform=transform, training=training)
    for rec in net.history:
        print(f"epoch {rec['epoch']}: loss {rec['loss']:.4f}, train accuracy "
              f"{rec['accuracy']:.1f}%")
    left_out = {name: why for rec in net.history for name, why in rec.get("failed", [])}
    if left_out:
        name, why = next(iter(left_out.items()))
        print(f"camviz fine-tune: {len(left_out)} item(s) left out, e.g. {name}: {why}")
    print(f"output: {out.resolve()} (load it with camviz.convert.load_converted({str(out)!r}); "
          f"resume file {ckpt})")
    return 0
