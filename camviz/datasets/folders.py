"""Datasets that are folders: image files, class sub-folders (torchvision's ImageFolder layout),
and the demo world's layout with part masks.

Example:
    >>> len(ImageFiles([]))
    0
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from camviz.datasets.paths import read_rows, safe_join, where
from camviz.datasets.wsol import WsolMetadata, load_mask, read_ids
from camviz.errors import DatasetError
from camviz.images import IMAGE_SUFFIXES, list_images, load_image

__all__ = ["ImageFiles", "ImageFolder", "PartsFolder"]


class ImageFiles(Dataset):
    """Image files as dataset items: ``{"image": PIL image (or transformed), "path": str}``.

    Example:
        >>> len(ImageFiles([]))
        0
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], transform: Any = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = load_image(self.paths[i])
        x = self.transform(img) if self.transform is not None else img
        return {"image": x, "label": -1, "index": i, "path": str(self.paths[i])}


class ImageFolder(Dataset):
    """One sub-folder per class (torchvision's ImageFolder layout): ``root/<class>/<image>``.

    Classes are the sub-folder names, sorted; items are ``{"image", "label", "index", "path"}``.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for c in ("cat", "dog"):
        ...     (root / c).mkdir()
        ...     Image.new("RGB", (4, 4)).save(root / c / "a.png")
        >>> ds = ImageFolder(root)
        >>> ds.classes, len(ds), ds[1]["label"]
        (['cat', 'dog'], 2, 1)
    """

    def __init__(self, root: str | os.PathLike[str], transform: Any = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root} is not a folder")
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        if not self.classes:
            raise DatasetError(
                f"{self.root} has no sub-folders: the ImageFolder layout is one folder per "
                "class, root/<class>/<image>"
            )
        self.paths: list[Path] = []
        self.labels: list[int] = []
        for c, name in enumerate(self.classes):
            found = sorted(f for f in (self.root / name).rglob("*")
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            self.paths += found
            self.labels += [c] * len(found)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> list[int]:
        """Images per class, in class order (an empty class has 0)."""
        return [self.labels.count(c) for c in range(len(self.classes))]

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = load_image(self.paths[i])
        x = self.transform(img) if self.transform is not None else img
        return {"image": x, "label": self.labels[i], "index": i, "path": str(self.paths[i])}


class PartsFolder(Dataset):
    """A folder in the camviz.demo / wsolevaluation layout with part masks (``parts.txt``).

    Items are dicts ``{"image": (3, H, W) tensor, "label": int, "parts": {name: (H, W) bool},
    "path": str, "index": int}``; images are read in their stored frame (no EXIF rotation: the
    frame the masks were drawn in, as :class:`~camviz.datasets.WsolDataset` reads them) and go
    through ``transform`` (a :class:`camviz.images.Preprocess`), part masks through its
    geometry (resize/crop), so they align with the network input. Every path in the metadata
    must stay under ``root`` (:class:`~camviz.errors.UnsafePath` otherwise).

    Example:
        >>> PartsFolder("/no/such/folder")
        Traceback (most recent call last):
        ...
        camviz.errors.DatasetError: no image_ids.txt in /no/such/folder; ...
    """

    def __init__(self, root: str | os.PathLike[str], transform: Any = None) -> None:
        self.root = Path(root)
        self.transform = transform
        meta = WsolMetadata(self.root, check_files=False)
        self.image_ids = [r.image_id for r in meta.records]
        self.labels = [r.label for r in meta.records]
        parts_file = self.root / "parts.txt"
        if not parts_file.is_file():
            raise DatasetError(f"missing parts.txt in {self.root}; a parts dataset needs "
                               "image_ids.txt and parts.txt (the camviz.demo layout)")
        parts: dict[str, list[tuple[str, Path]]] = {i: [] for i in self.image_ids}
        names: dict[str, None] = {}
        for n, row in read_rows(parts_file):
            if len(row) < 3:
                raise DatasetError(f"{where(parts_file, n)}: expected "
                                   f"'image_path,part_name,mask_path', got {','.join(row)!r}")
            if row[0] not in parts:
                raise DatasetError(f"{where(parts_file, n)}: {row[0]!r} is not in image_ids.txt")
            parts[row[0]].append((row[1], safe_join(self.root, row[2])))
            names[row[1]] = None
        self.paths = [safe_join(self.root, i) for i in self.image_ids]
        self.parts = parts
        self.part_names = list(names)
        declared = _declared_parts(self.root / "split.json")
        self.part_names = list(dict.fromkeys([*declared, *self.part_names]))

    def __len__(self) -> int:
        return len(self.image_ids)

    def class_parts(
        self, classes: Sequence[str] | None = None, min_fraction: float = 0.5
    ) -> dict[Any, list[str]]:
        """Per class, the parts listed for at least ``min_fraction`` of its images.

        Keys are class names when ``classes`` (index -> name) is given, else class indices.

        Example:
            >>> from camviz.demo import write_split
            >>> import tempfile
            >>> ds = PartsFolder(write_split("test", 4, tempfile.mkdtemp(), progress=False))
            >>> all(set(p) <= set(ds.part_names) for p in ds.class_parts().values())
            True
        """
        seen: dict[int, dict[str, int]] = {}
        count: dict[int, int] = {}
        for img, label in zip(self.image_ids, self.labels, strict=True):
            count[label] = count.get(label, 0) + 1
            for name in dict.fromkeys(n for n, _ in self.parts[img]):
                seen.setdefault(label, {})[name] = seen.setdefault(label, {}).get(name, 0) + 1
        out: dict[Any, list[str]] = {}
        for label in sorted(count):
            if label < 0:
                continue
            names = [n for n, c in seen.get(label, {}).items() if c >= min_fraction * count[label]]
            out[classes[label] if classes is not None else label] = sorted(names)
        return out

    def _geometry(self, mask: np.ndarray) -> torch.Tensor:
        m = torch.from_numpy(mask.astype(np.float32))[None]
        if self.transform is not None and hasattr(self.transform, "geometry"):
            m = self.transform.geometry(m)
        return m[0] > 0.5

    def __getitem__(self, i: int) -> dict[str, Any]:
        rel = self.image_ids[i]
        img = load_image(self.paths[i], exif=False)  # the frame the part masks were drawn in
        x = self.transform(img) if self.transform is not None else img
        parts: dict[str, torch.Tensor] = {}
        for name, mpath in self.parts[rel]:
            m = self._geometry(load_mask(mpath))
            parts[name] = m | parts[name] if name in parts else m
        return {"image": x, "label": self.labels[i], "parts": parts, "path": rel, "index": i}


def image_files(root: Path) -> ImageFiles:
    """The images of a folder (recursively) or listed in its ``image_ids.txt`` (an id listed
    twice is refused with :class:`DatasetError` naming the file and line).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp()); Image.new("RGB", (2, 2)).save(root / "a.png")
        >>> [p.name for p in image_files(root).paths]
        ['a.png']
    """
    ids = root / "image_ids.txt"
    if ids.is_file():
        return ImageFiles([safe_join(root, i) for i in read_ids(ids)])
    return ImageFiles(list_images([root]))


def _declared_parts(info: Path) -> list[str]:
    """The part vocabulary a demo split's ``split.json`` declares (none without the file)."""
    if not info.is_file():
        return []
    try:
        parts = json.loads(info.read_text(encoding="utf-8")).get("parts") or []
    except (OSError, ValueError, AttributeError) as err:
        raise DatasetError(f"{info} is not a camviz split description ({err}); regenerate the "
                           "split or remove the file") from err
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise DatasetError(f"{info}: 'parts' must be a list of part names")
    return parts
