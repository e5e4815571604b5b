"""Datasets with localization ground truth: wsolevaluation metadata folders (CUB, ImageNet and
OpenImages layouts, boxes or masks), and the camviz demo world's split folders.

A metadata folder holds, one image a line, comma-separated, paths relative to an image root:

* ``image_ids.txt`` — the image path; ``class_labels.txt`` — ``path,label``;
* ``image_sizes.txt`` — ``path,width,height`` (optional);
* ``localization.txt`` — boxes ``path,x0,y0,x1,y1`` (inclusive, original pixels, one line per
  box) or masks ``path,mask_path,ignore_path`` (OpenImages; ignore may be empty);
* ``localization_masks.txt`` — masks in a separate file (the demo world writes both).

Paths come from untrusted files: every one must stay under its root (no absolute paths, no
``..``, no symlink leading out) or :class:`~camviz.errors.UnsafePath` is raised. Images that do
not exist are listed in ``missing`` and left out, so a run over the rest goes on.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "image_ids.txt").write_text("a.png\\n")
    >>> _ = (d / "class_labels.txt").write_text("a.png,2\\n")
    >>> _ = (d / "localization.txt").write_text("a.png,1,2,3,4\\n")
    >>> meta = WsolMetadata(d)
    >>> len(meta), meta.missing, meta.has_boxes
    (0, [('a.png', 'image file not found')], True)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from camviz.datasets.paths import parse_coord, parse_int, read_rows, safe_join, where
from camviz.errors import DatasetError
from camviz.images import load_image

__all__ = ["scale_boxes", "WsolRecord", "WsolMetadata", "WsolDataset", "load_mask"]


def scale_boxes(boxes: Any, image_size: tuple[int, int], map_size: tuple[int, int]) -> np.ndarray:
    """Scale boxes from an image of ``image_size`` (W, H) to a map of ``map_size`` (W, H), with
    the reference's arithmetic: float scaling, then truncation to int of all four coordinates.

    Example:
        >>> scale_boxes([[10, 20, 99, 149]], (100, 150), (224, 224)).tolist()
        [[22, 29, 221, 222]]
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    iw, ih = (float(v) for v in image_size)
    mw, mh = (float(v) for v in map_size)
    out = np.stack([b[:, 0] * mw / iw, b[:, 1] * mh / ih, b[:, 2] * mw / iw, b[:, 3] * mh / ih], 1)
    return out.astype(np.int64)


def load_mask(path: str | os.PathLike[str], size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask image as a boolean array (> 0.5 of the 8-bit value, i.e. any non-zero pixel),
    optionally resized with nearest neighbour to ``size`` (W, H) first, as the reference does.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.png")
        >>> Image.fromarray(np.array([[0, 255], [0, 0]], np.uint8)).save(p)
        >>> load_mask(p, (4, 4)).sum()
        np.int64(4)
    """
    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if size is not None and im.size != tuple(size):
                im = im.resize(tuple(size), Image.NEAREST)
            arr = np.asarray(im, dtype=np.float32)
    except Exception as err:  # untrusted file: a decoder's failure, a decompression bomb
        raise DatasetError(f"cannot read mask {path}: {err}; check the file") from err
    return arr > 0.5


@dataclass
class WsolRecord:
    """One image of a metadata folder: its path, label, size and ground truth."""

    image_id: str
    path: Path
    label: int
    size: tuple[int, int] | None = None  # (width, height) from image_sizes.txt
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    mask_paths: list[Path] = field(default_factory=list)
    ignore_path: Path | None = None


class WsolMetadata:
    """The records of one wsolevaluation metadata folder (one split).

    ``metadata_dir`` holds the .txt files; ``image_root`` (default: the metadata folder) is
    where image paths point. Mask paths are relative to ``mask_root`` (default: the image
    root). ``records`` lists the usable images in file order; ``missing`` lists
    ``(image_id, reason)`` for images left out.

    Example:
        >>> try:
        ...     WsolMetadata("/no/such/folder")
        ... except DatasetError as err:
        ...     print(str(err).split(";")[0])
        no image_ids.txt in /no/such/folder
    """

    def __init__(
        self,
        metadata_dir: str | os.PathLike[str],
        image_root: str | os.PathLike[str] | None = None,
        mask_root: str | os.PathLike[str] | None = None,
        check_files: bool = True,
    ) -> None:
        self.metadata_dir = Path(metadata_dir)
        self.image_root = Path(image_root) if image_root is not None else self.metadata_dir
        self.mask_root = Path(mask_root) if mask_root is not None else self.image_root
        ids_file = self.metadata_dir / "image_ids.txt"
        if not ids_file.is_file():
            raise DatasetError(
                f"no image_ids.txt in {self.metadata_dir}; give a wsolevaluation metadata "
                "folder (image_ids.txt, class_labels.txt, localization.txt)"
            )
        if not self.image_root.is_dir():
            raise DatasetError(f"image root {self.image_root} is not a folder")
        ids = read_ids(ids_file)
        lab_file = self.metadata_dir / "class_labels.txt"
        labels = read_labels(lab_file) if lab_file.is_file() else {}
        size_file = self.metadata_dir / "image_sizes.txt"
        sizes = read_sizes(size_file) if size_file.is_file() else {}
        boxes: dict[str, list[list[int]]] = {}
        masks: dict[str, tuple[list[str], str]] = {}
        for name in ("localization.txt", "localization_masks.txt"):
            f = self.metadata_dir / name
            if f.is_file():
                read_localization(f, boxes, masks)
        self.has_boxes = bool(boxes)
        self.has_masks = bool(masks)
        self.records: list[WsolRecord] = []
        self.missing: list[tuple[str, str]] = []
        for image_id in ids:
            path = safe_join(self.image_root, image_id)
            if check_files and not path.is_file():
                self.missing.append((image_id, "image file not found"))
                continue
            if image_id not in labels and lab_file.is_file():
                self.missing.append((image_id, "no class label"))
                continue
            rec = WsolRecord(image_id, path, labels.get(image_id, -1), sizes.get(image_id))
            if image_id in boxes:
                rec.boxes = np.asarray(boxes[image_id], dtype=np.int64).reshape(-1, 4)
            if image_id in masks:
                mpaths, ign = masks[image_id]
                rec.mask_paths = [safe_join(self.mask_root, m) for m in mpaths]
                rec.ignore_path = safe_join(self.mask_root, ign) if ign else None
                gone = [m for m in rec.mask_paths if check_files and not m.is_file()]
                if gone:
                    self.missing.append((image_id, f"mask file not found: {gone[0]}"))
                    continue
            self.records.append(rec)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> WsolRecord:
        return self.records[i]


class WsolDataset(Dataset):
    """A torch Dataset over :class:`WsolMetadata`: each item is a dict.

    Keys: ``image`` (the transform's output — a (3, H, W) tensor for a
    :class:`~camviz.images.Preprocess` — or the PIL image without one), ``label``, ``index``,
    ``image_id``, ``size`` (original W, H), ``boxes`` ((m, 4) int64 in original pixels, or in
    ``map_size`` pixels when given, with the reference's truncation), and ``mask`` / ``ignore``
    (bool (H, W) at ``map_size``, or at the original size) when the split has masks. Use
    :func:`collate` with a DataLoader (boxes differ in count per image).

    Example:
        >>> ds = WsolDataset("/no/such")  # doctest: +SKIP
    """

    def __init__(
        self,
        metadata: WsolMetadata | str | os.PathLike[str],
        transform: Callable[[Image.Image], Any] | None = None,
        map_size: tuple[int, int] | None = None,
        image_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.meta = (
            metadata
            if isinstance(metadata, WsolMetadata)
            else WsolMetadata(metadata, image_root=image_root)
        )
        self.transform = transform
        self.map_size = map_size

    @property
    def missing(self) -> list[tuple[str, str]]:
        return self.meta.missing

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.meta[i]
        img = load_image(rec.path, exif=False)  # the frame the boxes were drawn in
        size = rec.size or img.size
        item: dict[str, Any] = {
            "index": i,
            "image_id": rec.image_id,
            "label": rec.label,
            "size": tuple(size),
            "stored_size": tuple(img.size),
            "image": self.transform(img) if self.transform is not None else img,
        }
        bx = rec.boxes
        item["boxes"] = scale_boxes(bx, size, self.map_size) if self.map_size and len(bx) else bx
        if rec.mask_paths:
            target = self.map_size or tuple(size)
            fg = np.zeros((target[1], target[0]), dtype=bool)
            for m in rec.mask_paths:
                fg |= load_mask(m, target)
            item["mask"] = fg
            item["ignore"] = (
                load_mask(rec.ignore_path, target) & ~fg
                if rec.ignore_path is not None
                else np.zeros_like(fg)
            )
        return item


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_ids(f: Path) -> list[str]:
    """``image_ids.txt``: one image path a line; an id listed twice is refused (it would be
    counted twice).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "image_ids.txt"; _ = p.write_text("a.png\\na.png\\n")
        >>> read_ids(p)
        Traceback (most recent call last):
        ...
        camviz.errors.DatasetError: ...image_ids.txt:2: 'a.png' is listed twice (also on line 1)
    """
    first: dict[str, int] = {}
    for n, row in read_rows(f):
        if row[0] in first:
            raise DatasetError(f"{where(f, n)}: {row[0]!r} is listed twice (also on line "
                               f"{first[row[0]]})")
        first[row[0]] = n
    return list(first)


def read_labels(f: Path) -> dict[str, int]:
    """``class_labels.txt``: ``path,label`` with a non-negative integer label.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "class_labels.txt"; _ = p.write_text("a.png,2\\n")
        >>> read_labels(p)
        {'a.png': 2}
    """
    labels: dict[str, int] = {}
    for n, row in read_rows(f):
        if len(row) < 2:
            raise DatasetError(f"{where(f, n)}: expected 'path,label', got {','.join(row)!r}")
        label = parse_int(row[1], where(f, n), minimum=0)
        if labels.get(row[0], label) != label:
            raise DatasetError(f"{where(f, n)}: {row[0]!r} has two labels "
                               f"({labels[row[0]]} and {label})")
        labels[row[0]] = label
    return labels


def read_sizes(f: Path) -> dict[str, tuple[int, int]]:
    """``image_sizes.txt``: ``path,width,height`` with positive integer sizes.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "image_sizes.txt"; _ = p.write_text("a.png,0,4\\n")
        >>> read_sizes(p)
        Traceback (most recent call last):
        ...
        camviz.errors.DatasetError: ...image_sizes.txt:1: 0 is below 1; fix the metadata
    """
    sizes: dict[str, tuple[int, int]] = {}
    for n, row in read_rows(f):
        if len(row) < 3:
            raise DatasetError(f"{where(f, n)}: expected 'path,width,height', got "
                               f"{','.join(row)!r}")
        sizes[row[0]] = (parse_int(row[1], where(f, n), 1), parse_int(row[2], where(f, n), 1))
    return sizes


def read_localization(
    f: Path, boxes: dict[str, list[list[int]]], masks: dict[str, tuple[list[str], str]]
) -> None:
    """``localization.txt`` lines into ``boxes`` (``path,x0,y0,x1,y1``, inclusive, finite,
    x0 <= x1 and y0 <= y1) or ``masks`` (``path,mask_path,ignore_path``).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "localization.txt"; _ = p.write_text("a.png,1,2,3,4")
        >>> b = {}; read_localization(p, b, {}); b
        {'a.png': [[1, 2, 3, 4]]}
    """
    for n, row in read_rows(f):
        key, rest = row[0], row[1:]
        if len(rest) == 4 and all(_is_number(c) for c in rest):
            box = [parse_coord(c, where(f, n)) for c in rest]
            if box[2] < box[0] or box[3] < box[1]:
                raise DatasetError(f"{where(f, n)}: box {box} has x1 < x0 or y1 < y0; boxes are "
                                   "x0,y0,x1,y1 with inclusive corners")
            boxes.setdefault(key, []).append(box)
        elif len(rest) in (1, 2) and rest[0] and not _is_number(rest[0]):
            ign = rest[1] if len(rest) == 2 else ""
            prev = masks.get(key, ([], ign))
            masks[key] = (prev[0] + [rest[0]], prev[1] or ign)
        else:
            raise DatasetError(
                f"{where(f, n)}: expected 'path,x0,y0,x1,y1' or 'path,mask_path,ignore_path', "
                f"got {','.join(row)!r}"
            )
