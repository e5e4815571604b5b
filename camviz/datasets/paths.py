"""Untrusted metadata files: paths that stay under their root, and comma-separated rows.

Example:
    >>> safe_join("/data/cub", "images/a.jpg").as_posix()
    '/data/cub/images/a.jpg'
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from camviz.errors import DatasetError, UnsafePath

__all__ = ["safe_join", "read_rows", "read_classes", "where", "parse_int", "parse_coord", "Row",
           "MAX_COORD"]


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


Row = tuple[int, list[str]]  # (line number, cells)
#: Box coordinates beyond this many pixels are refused as corrupt metadata.
MAX_COORD = 10**7


def read_rows(path: Path) -> list[Row]:
    """The non-empty lines of a metadata file as ``(line number, cells)``, split at commas,
    cells stripped. A UTF-8 byte-order mark and CRLF line ends are accepted; text that is not
    UTF-8, or holds NUL bytes, raises :class:`DatasetError` naming the file and line.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = p.write_bytes(b"\\xef\\xbb\\xbfa.png, 3\\r\\n\\r\\nb.png,4\\r\\n")
        >>> read_rows(p)
        [(1, ['a.png', '3']), (3, ['b.png', '4'])]
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err.strerror or err}") from err
    rows: list[Row] = []
    for n, raw in enumerate(data.splitlines(), start=1):
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if b"\x00" in raw:
            raise DatasetError(f"{where(path, n)}: a NUL byte; the file is damaged or not text")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetError(
                f"{where(path, n)}: not UTF-8 text; save the file as UTF-8"
            ) from None
        if line.strip():
            rows.append((n, [c.strip() for c in line.split(",")]))
    return rows


def where(path: Path, line: int) -> str:
    """``file:line``, for messages about metadata.

    Example:
        >>> where(Path("labels.txt"), 3)
        'labels.txt:3'
    """
    return f"{path}:{line}"


def parse_int(text: str, where: str, minimum: int | None = None) -> int:
    """An integer cell of a metadata file (at least ``minimum``), or :class:`DatasetError`
    naming the place.

    Example:
        >>> parse_int("7", "labels.txt:1")
        7
        >>> parse_int("3.5", "labels.txt:2")
        Traceback (most recent call last):
        ...
        camviz.errors.DatasetError: labels.txt:2: '3.5' is not an integer; fix the metadata
    """
    try:
        value = int(text)
    except ValueError:
        raise DatasetError(f"{where}: {text!r} is not an integer; fix the metadata") from None
    if minimum is not None and value < minimum:
        raise DatasetError(f"{where}: {value} is below {minimum}; fix the metadata")
    return value


def parse_coord(text: str, where: str) -> int:
    """A box coordinate (a finite number of pixels, truncated to int as the reference does).

    Example:
        >>> parse_coord("12.7", "localization.txt:1")
        12
    """
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{where}: {text!r} is not a number; fix the metadata") from None
    if not math.isfinite(value) or abs(value) > MAX_COORD:
        raise DatasetError(f"{where}: box coordinate {text!r} is not a finite pixel position")
    return int(value)


def read_classes(path: Path) -> list[str]:
    """The class names of a ``classes.txt``: ``index,name`` lines (indices ``0..N-1``, each
    once, in any order) or one name a line (in class order); a comma in a name is kept. Read
    with :func:`read_rows` (BOM and CRLF accepted; NUL bytes, text that is not UTF-8 refused).
    An empty file, a line without a name, a repeated index or name, or a file that mixes both
    forms raises :class:`DatasetError` naming the file and line.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "classes.txt"
        >>> _ = p.write_text("1,dog\\n0,cat\\n")
        >>> read_classes(p)
        ['cat', 'dog']
        >>> _ = p.write_text("0,cat\\n0,dog\\n")
        >>> read_classes(p)
        Traceback (most recent call last):
        ...
        camviz.errors.DatasetError: ...classes.txt:2: class index 0 is listed twice (also on ...
    """
    rows = read_rows(path)
    if not rows:
        raise DatasetError(f"{path} names no class; write one class a line (index,name or name)")
    indexed = _has_index(rows[0][1])
    table: dict[int, tuple[str, int]] = {}
    seen: dict[str, int] = {}
    for n, cells in rows:
        if _has_index(cells) != indexed:
            raise DatasetError(f"{where(path, n)}: {','.join(cells)!r} mixes plain names with "
                               "index,name lines; use one form for the whole file")
        index, name = (int(cells[0]), ",".join(cells[1:])) if indexed else (len(table),
                                                                             ",".join(cells))
        if not name:
            raise DatasetError(f"{where(path, n)}: no class name; write index,name")
        if index in table:
            raise DatasetError(f"{where(path, n)}: class index {index} is listed twice (also on "
                               f"line {table[index][1]}); give each index once")
        if name in seen:
            raise DatasetError(f"{where(path, n)}: class {name!r} is listed twice (also on line "
                               f"{seen[name]}); give each class once")
        table[index], seen[name] = (name, n), n
    missing = sorted(set(range(len(table))) - set(table))
    if missing:
        raise DatasetError(f"{path}: class indices must be 0..{len(table) - 1}, each once; "
                           f"{missing[0]} is missing")
    return [table[i][0] for i in range(len(table))]


def _has_index(cells: list[str]) -> bool:
    return len(cells) >= 2 and cells[0].isascii() and cells[0].isdigit()
