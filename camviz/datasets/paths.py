"""Untrusted metadata files: paths that stay under their root, and comma-separated rows.

Example:
    >>> safe_join("/data/cub", "images/a.jpg").as_posix()
    '/data/cub/images/a.jpg'
"""

from __future__ import annotations

import os
from pathlib import Path

from camviz.errors import DatasetError, UnsafePath

__all__ = ["safe_join", "read_rows", "parse_int"]


def safe_join(root: str | os.PathLike[str], rel: str) -> Path:
    """``root / rel`` for a path read from metadata, refusing any path that escapes ``root``.

    Refused (:class:`UnsafePath`): absolute paths, drive letters, ``..`` components, and paths
    whose real location (symlinks followed) is outside the real ``root``.

    Example:
        >>> safe_join("/data/cub", "images/a.jpg").as_posix()
        '/data/cub/images/a.jpg'
        >>> try:
        ...     safe_join("/data/cub", "../etc/passwd")
        ... except UnsafePath as err:
        ...     print(type(err).__name__)
        UnsafePath
    """
    rootp = Path(root)
    text = rel.strip()
    if not text:
        raise DatasetError(f"empty path in metadata under {rootp}")
    pure = Path(text.replace("\\", "/"))
    if pure.is_absolute() or text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":"):
        raise UnsafePath(
            f"metadata path {text!r} is absolute; paths must be relative to the root {rootp}"
        )
    if ".." in pure.parts:
        raise UnsafePath(
            f"metadata path {text!r} leaves its root {rootp}; remove '..' from the metadata"
        )
    joined = rootp / pure
    real_root = rootp.resolve()
    real = joined.resolve()
    if real != real_root and real_root not in real.parents:
        raise UnsafePath(
            f"metadata path {text!r} resolves to {real}, outside the root {real_root} "
            "(a symlink leads out); copy the file under the root instead"
        )
    return joined


def read_rows(path: Path) -> list[list[str]]:
    """The non-empty lines of a metadata file, split at commas, cells stripped.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = p.write_text("a.png, 3\\n\\nb.png,4\\n")
        >>> read_rows(p)
        [['a.png', '3'], ['b.png', '4']]
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err}") from err
    return [[c.strip() for c in line.split(",")] for line in text.splitlines() if line.strip()]


def parse_int(text: str, where: str) -> int:
    """An integer cell of a metadata file, or :class:`DatasetError` naming the file.

    Example:
        >>> parse_int("7", "labels.txt")
        7
    """
    try:
        return int(float(text))
    except ValueError:
        raise DatasetError(f"{where}: {text!r} is not a number; fix the metadata") from None
