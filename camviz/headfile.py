"""Head files: a GAP network's linear head on its own, in safetensors, tied to the trunk it reads.

A head fitted on frozen features (:func:`camviz.fit_head`) is small (C x K weights) and only
means something on the trunk whose features it was fitted to. :func:`write_head` stores the
head's weight and bias as tensors and, as safetensors metadata, the class names, the pooling and
the trunk's identity (:func:`camviz.gapnet.trunk_fingerprint`: everything that makes the
features, without the head); :func:`read_head` reads such a file back (never pickle: safetensors
holds only tensors and strings) and checks it.
``GapNet.save_head`` and ``camviz.load_head`` are built on these.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "h.safetensors"
    >>> write_head(p, nn.Linear(4, 2), ["a", "b"], trunk="0123abcd", pool="avg")
    >>> h = read_head(p)
    >>> h.classes, h.weight.shape, h.trunk, h.pool
    (['a', 'b'], torch.Size([2, 4]), '0123abcd', 'avg')
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn

from camviz.errors import HeadError
from camviz.files import write_bytes
from camviz.maps import POOLS

__all__ = ["HEAD_FORMAT", "HeadFile", "write_head", "read_head"]

#: The ``format`` metadata of a camviz head file (bump ``version`` on an incompatible change).
HEAD_FORMAT = "camviz-head"
_VERSION = "1"


@dataclass
class HeadFile:
    """What a head file holds: ``weight`` (C, K) and ``bias`` (C,) of the ``nn.Linear``, float32
    on the CPU; ``classes`` (C names); ``trunk`` (the fingerprint of the trunk it was fitted on);
    ``pool`` ("avg" or "max")."""

    weight: torch.Tensor
    bias: torch.Tensor
    classes: list[str]
    trunk: str
    pool: str

    def linear(self) -> nn.Linear:
        """The head as a fresh ``nn.Linear`` (K -> C).

        Example:
            >>> HeadFile(torch.ones(2, 3), torch.zeros(2), ["a", "b"], "t", "avg").linear()
            Linear(in_features=3, out_features=2, bias=True)
        """
        c, k = self.weight.shape
        lin = nn.Linear(k, c)
        with torch.no_grad():
            lin.weight.copy_(self.weight)
            lin.bias.copy_(self.bias)
        return lin


def write_head(path: str | os.PathLike[str], linear: nn.Linear, classes: Sequence[str],
               trunk: str, pool: str) -> None:
    """Write ``linear``'s weight and bias, the class names, the trunk fingerprint and the pooling
    to ``path`` as one safetensors file, atomically.

    Example:
        >>> import tempfile
        >>> write_head(Path(tempfile.mkdtemp()) / "h.safetensors", nn.Linear(2, 3), ["a"],
        ...            trunk="t", pool="avg")
        Traceback (most recent call last):
        ...
        camviz.errors.HeadError: 1 class names for a head of 3 classes
    """
    names = [str(c) for c in classes]
    if len(names) != linear.out_features:
        raise HeadError(f"{len(names)} class names for a head of {linear.out_features} classes")
    if pool not in POOLS:
        raise HeadError(f"pool must be one of {POOLS}, got {pool!r}")
    weight = linear.weight.detach().float().cpu().contiguous()
    bias = (linear.bias.detach().float().cpu().contiguous() if linear.bias is not None
            else torch.zeros(linear.out_features))
    meta = {"format": HEAD_FORMAT, "version": _VERSION, "classes": json.dumps(names),
            "trunk": str(trunk), "pool": pool}
    write_bytes(path, st_save({"weight": weight, "bias": bias}, metadata=meta))


def read_head(path: str | os.PathLike[str]) -> HeadFile:
    """Read and check a head file written by :func:`write_head`; anything else (another file,
    a damaged one, inconsistent shapes or names) raises :class:`~camviz.errors.HeadError`.

    Example:
        >>> read_head("/no/such/head.safetensors")
        Traceback (most recent call last):
        ...
        camviz.errors.HeadError: cannot read head file /no/such/head.safetensors: ...
    """
    p = Path(path)
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (OSError, SafetensorError, ValueError) as err:
        raise HeadError(f"cannot read head file {p}: {err}; give a file written by "
                        "net.save_head() or `camviz fit-head`") from None
    if meta.get("format") != HEAD_FORMAT or meta.get("version") != _VERSION:
        raise HeadError(f"{p} is not a camviz head file (format {meta.get('format')!r}, version "
                        f"{meta.get('version')!r}); write one with net.save_head()")
    weight, bias = tensors.get("weight"), tensors.get("bias")
    try:
        classes = json.loads(meta.get("classes", ""))
    except ValueError:
        classes = None
    ok = (weight is not None and bias is not None and weight.ndim == 2 and bias.ndim == 1
          and weight.is_floating_point() and bias.is_floating_point()
          and bias.shape[0] == weight.shape[0] and isinstance(classes, list)
          and len(classes) == weight.shape[0] and all(isinstance(c, str) for c in classes)
          and meta.get("pool") in POOLS and bool(meta.get("trunk")))
    if not ok:
        raise HeadError(f"{p} is damaged: it needs a 2-d weight, a bias and one class name per "
                        "row, a pooling and a trunk fingerprint; write it again with "
                        "net.save_head()")
    return HeadFile(weight.float(), bias.float(), classes, meta["trunk"], meta["pool"])

