"""What every ``camviz`` subcommand shares: model and data options, and their checks.

Example:
    >>> p = argparse.ArgumentParser(); model_args(p)
    >>> p.parse_args(["--weights", "none"]).weights is None
    True
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from camviz.datasets import DEFAULT_N
from camviz.errors import CamvizError
from camviz.files import TMP_PREFIX
from camviz.gapnet import GapNet
from camviz.heads import load_head
from camviz.models import load_model

__all__ = ["weights_arg", "model_args", "data_arg", "positive_int", "nonnegative_int",
           "check_out_file", "check_out_dir", "open_model"]


def weights_arg(text: str) -> str | None:
    """Parse ``--weights``: "none" or "random" mean random weights (None), else a weights name.

    Example:
        >>> weights_arg("none") is None, weights_arg("IMAGENET1K_V2")
        (True, 'IMAGENET1K_V2')
    """
    return None if text.lower() in ("none", "random") else text


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1.

    Example:
        >>> positive_int("3")
        3
    """
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """An argparse type: an integer of at least 0 (``--workers 0``: load in this process).

    Example:
        >>> nonnegative_int("0")
        0
    """
    return _int_at_least(text, 0)


def check_out_file(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Check, before any work, that the file ``path`` can be written: it is not a folder,
    nothing on its path is a file, and its folder (or the nearest one that exists, when
    missing folders are to be created) takes a new file. Nothing is left on disk.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> check_out_file(d / "new" / "s.npz") == d / "new" / "s.npz", (d / "new").exists()
        (True, False)
        >>> check_out_file(d)
        Traceback (most recent call last):
        ...
        camviz.errors.CamvizError: --out ... is a folder; give the path of the file to write
    """
    p = Path(path)
    if p.is_dir():
        raise CamvizError(f"{flag} {p} is a folder; give the path of the file to write")
    _check_writable(p.parent, p, flag)
    return p


def check_out_dir(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Check, before any work, that ``path`` can be an output folder: not a file, nothing on
    its path a file, and it (or the nearest folder above it that exists) takes a new file.
    Nothing is created (a run that writes the folder creates it).

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkstemp()[1])
        >>> check_out_dir(f / "sub", "--checkpoint")
        Traceback (most recent call last):
        ...
        camviz.errors.CamvizError: --checkpoint ... is under the file ...; give a path in a folder
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CamvizError(f"{flag} {p} is a file; give a folder (it is created if missing)")
    _check_writable(p, p, flag)
    return p


def _check_writable(folder: Path, path: Path, flag: str) -> None:
    """Raise unless ``folder`` is, or can be created as, a folder that takes a new file."""
    near = folder
    while not near.is_dir() and not near.exists() and near != near.parent:
        near = near.parent
    if not near.is_dir():
        raise CamvizError(f"{flag} {path} is under the file {near}; give a path in a folder")
    try:
        with tempfile.TemporaryFile(dir=near, prefix=TMP_PREFIX):
            pass
    except OSError as err:
        raise CamvizError(f"cannot write {flag} {path}: the folder {near} does not take new "
                          f"files ({err.strerror or err}); give another {flag}") from None


def model_args(p: argparse.ArgumentParser, head: bool = True) -> None:
    """Add the options every model-running command shares: ``--model``, ``--weights``,
    ``--device`` and (``head=True``) ``--head``.

    Example:
        >>> p = argparse.ArgumentParser(); model_args(p)
        >>> p.parse_args([]).model, p.parse_args([]).head
        ('demo', None)
    """
    p.add_argument("--model", default="demo", help="a name from camviz.list_models()")
    p.add_argument("--weights", default="DEFAULT", type=weights_arg,
                   help="weights name, DEFAULT, none for random weights, or a checkpoint file "
                        "of yours (.pth, .safetensors)")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1")
    if head:
        p.add_argument("--head", default=None, metavar="FILE",
                       help="a head file (camviz fit-head, net.save_head) to use instead of "
                       "the model's own head, for its classes")


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
    """The network the parsed options name (with the head of ``--head FILE`` when given).

    Example:
        >>> args = argparse.Namespace(model="demo", weights=None, device="cpu")
        >>> open_model(args).num_units
        128
    """
    net = load_model(args.model, weights=args.weights, device=args.device)
    head = getattr(args, "head", None)
    return load_head(net, head) if head else net
