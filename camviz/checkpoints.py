"""Checkpoints of long passes: one rank's partial state, written atomically every N batches, read
back by a rerun with the same arguments, refused for another model, dataset or settings.

A checkpoint folder holds one ``.npz`` per rank (``scan-rank0-of-2.npz``...): the partial state's
arrays (no pickle) and one JSON string ``"checkpoint"`` with what made it (model and dataset
fingerprints, the settings, the world size, the shard) and how far it got.

Example:
    >>> import tempfile
    >>> ck = Checkpoint(tempfile.mkdtemp(), "scan", {"model": "ab12"}, rank=0, size=1)
    >>> ck.load() is None
    True
    >>> ck.save({"x": np.arange(3)}, {"done": 3})
    >>> ck.load()[1]["done"]
    3
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from camviz.errors import CamvizError
from camviz.files import atomic_open, remove_stale_temps

__all__ = ["FORMAT", "Checkpoint"]

FORMAT = "camviz.checkpoint/1"
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


class Checkpoint:
    """The checkpoint file of rank ``rank`` of ``size`` for a pass of kind ``kind`` ("scan",
    "eval") in ``folder``; ``identity`` (JSON) is what made it: a file whose identity differs is
    refused with :class:`CamvizError` (never resumed, never overwritten).

    Example:
        >>> Checkpoint("ck", "scan", {}, 1, 2).path.name
        'scan-rank1-of-2.npz'
    """

    def __init__(self, folder: str | os.PathLike[str], kind: str, identity: dict[str, Any],
                 rank: int = 0, size: int = 1) -> None:
        self.folder, self.kind, self.size = Path(folder), kind, size
        self.identity = json.loads(json.dumps(identity))  # as it reads back
        self.path = self.folder / f"{kind}-rank{rank}-of-{size}.npz"

    def load(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """``(arrays, progress)`` of this rank's checkpoint, or None when there is none (a
        damaged one is reported with a warning and started over). Leftover temporary files of
        a killed run are removed first.

        Example:
            >>> Checkpoint("/no/such/folder", "scan", {}).load() is None
            True
        """
        if self.folder.is_dir():
            remove_stale_temps(self.folder, name=f"{self.kind}-rank*.npz", recursive=False)
            others = sorted(p.name for p in self.folder.glob(f"{self.kind}-rank*-of-*.npz")
                            if not p.name.endswith(f"-of-{self.size}.npz"))
            if others:
                raise CamvizError(
                    f"{self.folder} holds checkpoints of a run with another number of processes "
                    f"({others[0]}); rerun with that number, or remove {self.folder} to start over"
                )
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            info = json.loads(str(arrays.pop("checkpoint")))
            if not isinstance(info, dict) or info.get("format") != FORMAT:
                raise ValueError(f"format {info.get('format') if isinstance(info, dict) else info}")
            progress = info["progress"]
            made_by = info["identity"]
        except _READ_ERRORS as err:
            warnings.warn(f"damaged checkpoint {self.path} ({type(err).__name__}: {err}); "
                          "starting this shard over", RuntimeWarning, stacklevel=2)
            return None
        self._check(made_by)
        return arrays, progress

    def _check(self, made_by: dict[str, Any]) -> None:
        for key in sorted(set(self.identity) | set(made_by)):
            mine, theirs = self.identity.get(key), made_by.get(key)
            if mine != theirs:
                raise CamvizError(
                    f"{self.path} is a checkpoint of another {self.kind}: its {key} is {theirs}, "
                    f"this run's is {mine}. Rerun with the arguments that made it, give another "
                    f"checkpoint folder, or remove {self.path} to start over"
                )

    def save(self, arrays: dict[str, np.ndarray], progress: dict[str, Any]) -> None:
        """Write the partial state atomically (a reader sees the previous one or this one).

        Example:
            >>> import tempfile
            >>> ck = Checkpoint(tempfile.mkdtemp(), "eval", {})
            >>> ck.save({}, {"done": 0}); ck.path.is_file()
            True
        """
        info = {"format": FORMAT, "kind": self.kind, "identity": self.identity,
                "progress": progress}
        with atomic_open(self.path, "wb") as fh:
            np.savez(fh, **arrays, checkpoint=np.array(json.dumps(info)))

    def remove(self) -> None:
        """Delete this rank's checkpoint (the pass is complete), and the folder when empty.

        Example:
            >>> Checkpoint("/no/such/folder", "scan", {}).remove()
        """
        self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (other ranks' files) or already gone
            self.folder.rmdir()
