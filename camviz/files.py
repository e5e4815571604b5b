"""Files that are never half-written: every output goes to a temporary file beside its target
and is renamed into place, so a reader (or a rerun after a crash) sees the old file or the new
one, never a part. Temporary files carry one prefix, so leftovers of a killed run are found and
removed on the next one; they are created with the user's normal permissions (umask).

Example:
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.txt"
    >>> write_text(p, "hello")
    >>> p.read_text(), sorted(x.name for x in p.parent.iterdir())
    ('hello', ['a.txt'])
"""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["TMP_PREFIX", "temp_name", "atomic_open", "write_bytes", "write_text", "save_image",
           "remove_stale_temps", "pid_alive", "umask_mode", "writable_cache",
           "store_in_cache"]

#: Prefix of every temporary file camviz writes (``.camviz-tmp-<pid>-<random>-<name>``).
TMP_PREFIX = ".camviz-tmp-"


def temp_name(path: str | os.PathLike[str]) -> Path:
    """A fresh temporary path beside ``path`` (``TMP_PREFIX<pid>-<random>-<name>``), for a
    writer that takes a file name; :func:`remove_stale_temps` finds it after a kill.

    Example:
        >>> temp_name("out/a.npz").name.startswith(TMP_PREFIX), temp_name("a.npz").name[-6:]
        (True, '-a.npz')
    """
    target = Path(path)
    return target.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{target.name}")


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``,
    on any error (or interrupt) it is removed. The folder is created if needed.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "b.bin"
        >>> with atomic_open(p) as fh:
        ...     _ = fh.write(b"xy")
        >>> p.read_bytes()
        b'xy'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    enc = {} if "b" in mode else {"encoding": "utf-8"}
    try:
        with open(tmp, mode.replace("w", "x"), **enc) as fh:  # a fresh file, umask permissions
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "c.bin"; write_bytes(p, b"1"); p.read_bytes()
        b'1'
    """
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "d.txt"; write_text(p, "é"); p.read_text()
        'é'
    """
    with atomic_open(path, "w") as fh:
        fh.write(text)


def save_image(image: Any, path: str | os.PathLike[str], format: str | None = None) -> Path:
    """Save a PIL image atomically (format from ``format`` or the suffix, PNG without one).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> save_image(Image.new("RGB", (2, 2)), Path(tempfile.mkdtemp()) / "e").suffix
        '.png'
    """
    p = Path(path)
    if not p.suffix:
        p = p.with_suffix(".png")
    fmt = format or {".jpg": "JPEG", ".jpeg": "JPEG"}.get(p.suffix.lower(), p.suffix[1:].upper())
    with atomic_open(p, "wb") as fh:
        image.save(fh, format=fmt)
    return p


def writable_cache(folder: str | os.PathLike[str], what: str) -> Path | None:
    """``folder``, created if needed, when a file can be written in it; else None with a
    warning. A cache only saves time: a folder that cannot be written (a path under a file, a
    read-only disk) must not stop or lose the work it would have cached.

    Example:
        >>> import tempfile, warnings
        >>> d = Path(tempfile.mkdtemp())
        >>> writable_cache(d / "scans", "scan") == d / "scans"
        True
        >>> (d / "f").write_text("")
        0
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter("always")
        ...     writable_cache(d / "f" / "scans", "scan"), "without a cache" in str(seen[0].message)
        (None, True)
    """
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=TMP_PREFIX):
            pass
    except OSError as err:
        _cache_warning(what, path, err)
        return None
    return path


def store_in_cache(write: Callable[[Path], object], target: Path, what: str) -> bool:
    """Run ``write(target)``; a failure to write (a full disk, a folder made read-only since)
    is a warning, not an error: the result is in hand and only the cache entry is missing.

    Example:
        >>> import tempfile
        >>> t = Path(tempfile.mkdtemp()) / "x.bin"
        >>> store_in_cache(lambda p: write_bytes(p, b"1"), t, "scan"), t.read_bytes()
        (True, b'1')
    """
    try:
        write(target)
    except OSError as err:
        _cache_warning(what, target.parent, err)
        return False
    return True


def _cache_warning(what: str, folder: Path, err: OSError) -> None:
    warnings.warn(f"cannot write the {what} cache in {folder} ({err.strerror or err}); "
                  "going on without a cache (set CAMVIZ_CACHE to a writable folder, or turn "
                  "the cache off)", RuntimeWarning, stacklevel=3)


def remove_stale_temps(folder: str | os.PathLike[str], name: str | None = None,
                       recursive: bool = True) -> int:
    """Remove temporary files that a killed camviz process left in ``folder`` (recursively,
    unless ``recursive`` is False); with ``name`` (a glob of target file names) only those of
    such targets. Returns how many. Files of processes still running are kept.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / f"{TMP_PREFIX}999999999-x-a.png").write_bytes(b"")
        >>> remove_stale_temps(d, name="b.png"), remove_stale_temps(d)
        (0, 1)
    """
    root = Path(folder)
    if not root.is_dir():
        return 0
    pattern = f"{TMP_PREFIX}*" if name is None else f"{TMP_PREFIX}*-*-{name}"
    n = 0
    for f in root.rglob(pattern) if recursive else root.glob(pattern):
        pid = f.name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and pid_alive(int(pid)):
            continue
        f.unlink(missing_ok=True)
        n += 1
    return n


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (this one, or anyone's): a temporary file or folder
    named with a live pid may still be in use and must be kept.

    Example:
        >>> pid_alive(os.getpid()), pid_alive(999999999)
        (True, False)
    """
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except PermissionError:  # someone else's live process
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` less the user's umask: the permissions a file (0o666) or folder (0o777) made
    the ordinary way gets. For what ``mkstemp``/``mkdtemp`` make owner-only.

    Example:
        >>> old = os.umask(0o022); m = umask_mode(0o777); _ = os.umask(old); oct(m)
        '0o755'
    """
    try:  # Linux: read it without setting it (setting it races with other threads)
        with open("/proc/self/status", encoding="ascii") as fh:
            mask = next(int(v, 8) for k, _, v in (ln.partition(":") for ln in fh)
                        if k == "Umask")
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o077)  # elsewhere the only read is setting it (0o077: never looser)
        os.umask(mask)
    return mode & ~mask
