"""Data specs: one string names a dataset, for every command and notebook.

* ``demo:SPLIT`` or ``demo:SPLIT:N`` — the demo world's split of N images (default
  :data:`DEFAULT_N`), generated once into the cache; ``demo-novel:SPLIT[:N]`` the same of the
  world's novel classes (arrangements the demo nets never saw, :data:`camviz.demo.NOVEL_CLASSES`);
* ``METADATA_DIR`` or ``METADATA_DIR:IMAGE_ROOT`` — a wsolevaluation metadata folder (labels,
  boxes or masks; images under IMAGE_ROOT, default the metadata folder); with ``parts.txt`` it
  also has part masks (the demo world's layout);
* a folder with one sub-folder per class (torchvision's ImageFolder layout);
* a folder of images (no labels).

Example:
    >>> parse_spec("demo:val:64")
    ('demo', 'val', 64)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from camviz.datasets.folders import ImageFolder, PartsFolder, image_files
from camviz.datasets.wsol import WsolDataset, WsolMetadata
from camviz.errors import DatasetError
from camviz.images import IMAGE_SUFFIXES

__all__ = ["DEFAULT_N", "DEMO_KINDS", "parse_spec", "demo_split", "resolve_data",
           "resolve_metadata", "NEEDS"]

#: Images of a demo split when a spec gives no count.
DEFAULT_N = 500
#: Spec prefixes of the demo world's splits -> class set.
DEMO_KINDS = {"demo": "base", "demo-novel": "novel"}
#: What a command may need of its data.
NEEDS = (None, "labels", "parts", "boxes")


def parse_spec(spec: str) -> tuple[str, str, Any]:
    """``("demo", split, n)``, ``("demo-novel", split, n)`` or ``("folder", metadata_dir,
    image_root or None)``.

    Example:
        >>> parse_spec("demo:")
        Traceback (most recent call last):
        ...
        camviz.errors.DatasetError: bad data spec 'demo:'; use demo:SPLIT or demo:SPLIT:N
        >>> parse_spec("demo-novel:test:40")
        ('demo-novel', 'test', 40)
    """
    kind = spec.split(":", 1)[0]
    if kind in DEMO_KINDS and ":" in spec:
        fields = spec.split(":")
        if len(fields) not in (2, 3) or not fields[1]:
            raise DatasetError(f"bad data spec {spec!r}; use {kind}:SPLIT or {kind}:SPLIT:N")
        try:
            n = int(fields[2]) if len(fields) == 3 else DEFAULT_N
        except ValueError:
            raise DatasetError(f"bad image count in {spec!r}; use {kind}:SPLIT:N") from None
        if n < 1:
            raise DatasetError(f"bad image count in {spec!r}: N must be at least 1")
        return kind, fields[1], n
    root, image_root = Path(spec), None
    if not root.is_dir() and ":" in spec:
        left, right = spec.split(":", 1)
        root, image_root = Path(left), Path(right)
    if not root.is_dir():
        raise DatasetError(f"data {spec} is not a folder; give demo:SPLIT[:N], a metadata "
                           "folder (METADATA_DIR[:IMAGE_ROOT]) or a folder of images")
    return "folder", str(root), image_root


def demo_split(spec: str) -> Path:
    """The cached folder of a ``demo:SPLIT[:N]`` spec (generated on first use).

    Example:
        >>> demo_split("demo:test:many")
        Traceback (most recent call last):
        ...
        camviz.errors.DatasetError: bad image count in 'demo:test:many'; use demo:SPLIT:N
    """
    kind, split, n = parse_spec(spec)
    if kind not in DEMO_KINDS:
        raise DatasetError(f"{spec!r} is not a demo spec; use demo:SPLIT[:N]")
    from camviz.demo import ensure_split  # the demo world loads on use

    return ensure_split(split, n, progress=True, classes=DEMO_KINDS[kind])


def resolve_metadata(spec: str) -> WsolMetadata:
    """A spec with localization ground truth (demo split or metadata folder) as metadata.

    Example:
        >>> try:
        ...     resolve_metadata("/no/such/folder")
        ... except DatasetError as err:
        ...     print(str(err).split(";")[0])
        data /no/such/folder is not a folder
    """
    kind, root, image_root = parse_spec(spec)
    if kind in DEMO_KINDS:
        return WsolMetadata(demo_split(spec))
    return WsolMetadata(root, image_root=image_root)


def resolve_data(spec: str, transform: Any = None, need: str | None = None) -> Dataset:
    """A spec as a dataset for scan, dissect, fit-head and figures (see the module doc).

    ``need``: None (any images), "labels", "parts" (part masks, for dissection) or "boxes"
    (localization ground truth); a folder that lacks it raises :class:`DatasetError`.

    Example:
        >>> resolve_data("/no/such/folder")
        Traceback (most recent call last):
        ...
        camviz.errors.DatasetError: data /no/such/folder is not a folder; ...
    """
    if need not in NEEDS:
        raise DatasetError(f"need must be one of {NEEDS}, got {need!r}")
    kind, root, image_root = parse_spec(spec)
    folder = demo_split(spec) if kind in DEMO_KINDS else Path(root)
    if (folder / "parts.txt").is_file() and need != "boxes":
        return PartsFolder(folder, transform=transform)
    if need == "parts":
        raise DatasetError(
            f"{spec} has no parts.txt, so there are no part masks to dissect against; use a "
            "folder in the camviz.demo layout (see `python -m camviz.demo generate`)"
        )
    if (folder / "image_ids.txt").is_file() and (folder / "class_labels.txt").is_file():
        return WsolDataset(WsolMetadata(folder, image_root=image_root), transform=transform)
    if need == "boxes":
        raise DatasetError(f"{spec} has no localization ground truth (image_ids.txt, "
                           "class_labels.txt, localization.txt)")
    if not (folder / "image_ids.txt").is_file() and _has_class_folders(folder):
        return ImageFolder(folder, transform=transform)
    if need == "labels":
        raise DatasetError(f"{spec} has no labels: give one sub-folder per class (ImageFolder "
                           "layout), a metadata folder with class_labels.txt, or a demo split")
    files = image_files(folder)
    files.transform = transform
    return files


def _has_class_folders(folder: Path) -> bool:
    """Sub-folders and no image beside them (a README or .DS_Store there is ignored, as
    torchvision's ImageFolder ignores it; a loose image would belong to no class)."""
    subs = [d for d in folder.iterdir() if d.is_dir()]
    loose = [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    return bool(subs) and not loose
