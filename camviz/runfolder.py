"""An output folder's bookkeeping: what it is bound to, which inputs it has finished, where
each input's files go.

A folder is bound to one run configuration (``camviz-run.json``); ``results.jsonl`` holds one
record per input keyed by the input's path, size and mtime; a rerun resumes, a changed file is
redone, another configuration is refused.

Example:
    >>> image_key(Path("a/cat.jpg")) != image_key(Path("b/cat.jpg"))
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camviz.errors import CamvizError
from camviz.files import remove_stale_temps, write_text
from camviz.images import list_images
from camviz.scan import model_fingerprint

if TYPE_CHECKING:
    from camviz.gapnet import GapNet

__all__ = ["RESULTS", "MANIFEST", "RunLog", "bind_folder", "image_key", "list_inputs",
           "prepare_out", "run_config", "safe_name", "source_id", "source_of"]

RESULTS = "results.jsonl"
#: The settings an output folder is bound to.
MANIFEST = "camviz-run.json"
RUN_FORMAT = "camviz.run/2"


def safe_name(text: str, limit: int = 60) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``._-``), at most ``limit`` long.

    Example:
        >>> safe_name("tiger cat / Egyptian cat")
        'tiger_cat_Egyptian_cat'
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return (name or "x")[:limit]


def image_key(path: Path) -> str:
    """The output folder name of an input image: its file name made safe, plus a short hash of
    its resolved path, so that two different files never share outputs (same name in two
    folders, or across runs).

    Example:
        >>> image_key(Path("/photos/a b.jpg"))[:8]
        'a_b.jpg-'
    """
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:8]
    return f"{safe_name(Path(path).name, 60)}-{digest}"


def source_id(path: Path) -> dict[str, Any]:
    """What identifies an input file's content cheaply: resolved path, size and mtime.

    Example:
        >>> sorted(source_id(Path(__file__)))
        ['mtime_ns', 'path', 'size']
    """
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def run_config(net: GapNet, **options: Any) -> dict[str, Any]:
    """What made a run's records: the model (architecture, weights, classes, preprocessing,
    as a fingerprint) and the options that change the outputs.

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 2, 1), nn.Linear(2, 2), device="cpu")
        >>> sorted(run_config(net, topk=5))
        ['format', 'model', 'model_fingerprint', 'options']
    """
    return {"format": RUN_FORMAT, "model": repr(net), "model_fingerprint": model_fingerprint(net),
            "options": options}


def bind_folder(out: Path, config: dict[str, Any]) -> None:
    """Tie the output folder to one run configuration (``OUT/camviz-run.json``): a rerun with
    the same model and options resumes; another one is refused, never mixed in.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> bind_folder(d, {"model": "a", "options": {"topk": 5}})
        >>> bind_folder(d, {"model": "a", "options": {"topk": 3}})
        Traceback (most recent call last):
        ...
        camviz.errors.CamvizError: ... was made with other settings (options: {'topk': 5} here, ...
    """
    manifest = out / MANIFEST
    if not manifest.is_file():
        write_text(manifest, json.dumps(config, indent=1) + "\n")
        return
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CamvizError(f"{manifest} is damaged ({err}); remove it to start the folder "
                          "over, or give another --out") from err
    diff = [f"{k}: {old.get(k)!r} here, {config.get(k)!r} now" for k in sorted(config)
            if k != "model" and old.get(k) != config.get(k)]
    if diff:
        raise CamvizError(f"{out} was made with other settings ({'; '.join(diff)}); give "
                          "another --out, or remove that folder to start over")


def prepare_out(out: str | os.PathLike[str]) -> Path:
    """Check that ``out`` can be the output folder (a folder, or creatable, and writable) and
    create it; remove temporary files a killed run left in it.

    Example:
        >>> import tempfile
        >>> prepare_out(tempfile.mkstemp()[1])
        Traceback (most recent call last):
        ...
        camviz.errors.CamvizError: --out ... is a file; give a folder (it is created if missing)
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise CamvizError(f"--out {path} is a file; give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CamvizError(f"cannot create the output folder {path} ({err.strerror}); give "
                          "another --out") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise CamvizError(f"the output folder {path} is not writable; give another --out")
    remove_stale_temps(path)
    return path


class RunLog:
    """``OUT/results.jsonl``: one JSON record per image, appended as images finish.

    A line cut short by a crash is removed before appending (its image is redone); a damaged
    line (not JSON, not UTF-8, no source) is dropped with a warning and its image redone; the
    record of an input counts as done only while the file is unchanged (same path, size and
    mtime). A new record of a path supersedes the old one: :meth:`compact` (at the start and
    the end of a run) removes the old record's files that the new one does not have and
    rewrites the log with one record per path.

    Example:
        >>> import tempfile
        >>> log = RunLog(Path(tempfile.mkdtemp()) / RESULTS)
        >>> log.done({"path": "/a.png", "size": 1, "mtime_ns": 2}, retry_errors=False)
        False
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last: dict[str, dict[str, Any]] = {}
        self.superseded: list[dict[str, Any]] = []
        self.damaged = 0
        if path.is_file():
            self._repair()
            for line in path.read_bytes().split(b"\n"):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line.decode("utf-8"))
                    self._keep(rec, rec["source"]["path"])
                except (ValueError, KeyError, TypeError):
                    self.damaged += 1  # not UTF-8, not JSON, or no source: that image is redone

    def _keep(self, rec: dict[str, Any], key: str) -> None:
        old = self.last.pop(key, None)  # popped: the new record takes the end of the order
        if old is not None:
            self.superseded.append(old)
        self.last[key] = rec

    def _repair(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data[: data.rfind(b"\n") + 1]
            with open(self.path, "r+b") as fh:
                fh.truncate(len(keep))

    def done(self, source: dict[str, Any], retry_errors: bool) -> bool:
        """Whether ``source`` (see :func:`source_id`) has a record that still stands."""
        rec = self.last.get(source["path"])
        if rec is None or rec.get("source") != source:
            return False
        return rec.get("status") == "ok" or (rec.get("status") == "error" and not retry_errors)

    def append(self, rec: dict[str, Any]) -> None:
        """Add one record (one line, flushed and synced); it supersedes an older one of its path."""
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._keep(rec, rec["source"]["path"])

    def compact(self) -> None:
        """Leave the folder and the log holding only the standing records: remove the files
        of superseded records that no standing record has (and their folder once empty), then
        rewrite the log atomically without superseded or damaged lines. Files go first, so a
        run killed in between finds the superseded records again and finishes the job."""
        if not self.superseded and not self.damaged:
            return
        out = self.path.parent.resolve()
        keep = {f for rec in self.last.values() for f in _files(rec)}
        for rec in self.superseded:
            for f in _files(rec) - keep:
                target = (out / f).resolve()
                if not target.is_relative_to(out) or target.parent == out:
                    continue  # only an image's own folder in OUT, never OUT's own files
                target.unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # the folder stays while anything is in it
                    target.parent.rmdir()
        if self.damaged:
            warnings.warn(f"{self.path}: dropped {self.damaged} damaged line(s); their images "
                          "are redone", RuntimeWarning, stacklevel=2)
        write_text(self.path, "".join(json.dumps(rec) + "\n" for rec in self.last.values()))
        self.superseded, self.damaged = [], 0


def _files(rec: dict[str, Any]) -> set[str]:
    """The files (relative to OUT) a record says it wrote."""
    files = rec.get("overlays") if isinstance(rec.get("overlays"), list) else []
    return {f for f in [*files, rec.get("panel")] if isinstance(f, str) and f}


def list_inputs(inputs: Sequence[str | os.PathLike[str]], out: Path) -> list[Path]:
    """The image files of ``inputs`` (files and folders), leaving out everything under the
    output folder ``out`` (so an ``--out`` inside an input folder never feeds a rerun); an
    input given that lies inside ``out`` is refused (all of it would be left out).

    Example:
        >>> list_inputs(["out/in"], Path("out"))
        Traceback (most recent call last):
        ...
        camviz.errors.CamvizError: the input out/in is inside the output folder out; give ...
    """
    skip = out.resolve()
    for raw in inputs:
        if Path(raw).resolve().is_relative_to(skip):
            raise CamvizError(f"the input {raw} is inside the output folder {out}; give "
                              "another --out")
    return [p for p in list_images(inputs)
            if not p.resolve().is_relative_to(skip)]


def source_of(p: Path) -> dict[str, Any]:
    """:func:`source_id`, or the path alone for a missing or unreadable file (which the image
    loader then reports).

    Example:
        >>> source_of(Path("/no/such.png"))["size"] is None
        True
    """
    try:
        return source_id(p)
    except OSError:
        return {"path": str(p.resolve()), "size": None, "mtime_ns": None}
