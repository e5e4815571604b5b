"""What every ``camviz`` subcommand shares: model and data options, and their checks.

Example:
    >>> p = argparse.ArgumentParser(); model_args(p)
    >>> p.parse_args(["--weights", "none"]).weights is None
    True
"""

from __future__ import annotations

import argparse

from camviz.datasets import DEFAULT_N
from camviz.gapnet import GapNet
from camviz.models import load_model

__all__ = ["weights_arg", "model_args", "data_arg", "positive_int", "open_model"]


def weights_arg(text: str) -> str | None:
    """Parse ``--weights``: "none" or "random" mean random weights (None), else a weights name.

    Example:
        >>> weights_arg("none") is None, weights_arg("IMAGENET1K_V2")
        (True, 'IMAGENET1K_V2')
    """
    return None if text.lower() in ("none", "random") else text


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1.

    Example:
        >>> positive_int("3")
        3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def model_args(p: argparse.ArgumentParser) -> None:
    """Add the options every model-running command shares: ``--model``, ``--weights``,
    ``--device``.

    Example:
        >>> p = argparse.ArgumentParser(); model_args(p)
        >>> p.parse_args([]).model
        'demo'
    """
    p.add_argument("--model", default="demo", help="a name from camviz.list_models()")
    p.add_argument("--weights", default="DEFAULT", type=weights_arg,
                   help="weights name, DEFAULT, none for random weights, or a checkpoint file "
                        "of yours (.pth, .safetensors)")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1")


def data_arg(p: argparse.ArgumentParser, what: str = "a dataset folder") -> None:
    """Add ``--data SPEC`` (see :mod:`camviz.datasets.specs`).

    Example:
        >>> p = argparse.ArgumentParser(); data_arg(p)
        >>> p.parse_args(["--data", "demo:test"]).data
        'demo:test'
    """
    p.add_argument("--data", required=True,
                   help=f"demo:SPLIT[:N] (N defaults to {DEFAULT_N}) or {what}")


def open_model(args: argparse.Namespace) -> GapNet:
    """The network the parsed options name.

    Example:
        >>> args = argparse.Namespace(model="demo", weights=None, device="cpu")
        >>> open_model(args).num_units
        128
    """
    return load_model(args.model, weights=args.weights, device=args.device)
