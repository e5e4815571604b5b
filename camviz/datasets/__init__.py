"""Datasets: wsolevaluation metadata folders (boxes or masks), folders of images, class
sub-folders, the demo world's layout with part masks; one item convention and one collate;
data specs (``demo:test:200``, ``METADATA_DIR[:IMAGE_ROOT]``, a folder).

Paths come from untrusted files: every one must stay under its root (no absolute paths, no
``..``, no symlink leading out) or :class:`~camviz.errors.UnsafePath` is raised.

Example:
    >>> from camviz.datasets import resolve_data
    >>> resolve_data("demo:test:many")
    Traceback (most recent call last):
    ...
    camviz.errors.DatasetError: bad image count in 'demo:test:many'; use demo:SPLIT:N
"""

from camviz.datasets.batches import (
    ITEM_FAILURES,
    Numbered,
    Prepared,
    SkipBad,
    as_item,
    collate,
    item_name,
)
from camviz.datasets.folders import ImageFiles, ImageFolder, PartsFolder, image_files
from camviz.datasets.paths import parse_int, read_classes, read_rows, safe_join
from camviz.datasets.specs import (
    DEFAULT_N,
    demo_split,
    parse_spec,
    resolve_data,
    resolve_metadata,
)
from camviz.datasets.wsol import WsolDataset, WsolMetadata, WsolRecord, load_mask, scale_boxes

__all__ = [
    "DEFAULT_N",
    "ITEM_FAILURES",
    "ImageFiles",
    "ImageFolder",
    "PartsFolder",
    "Numbered",
    "Prepared",
    "SkipBad",
    "WsolDataset",
    "WsolMetadata",
    "WsolRecord",
    "as_item",
    "collate",
    "demo_split",
    "image_files",
    "item_name",
    "load_mask",
    "parse_int",
    "parse_spec",
    "read_classes",
    "read_rows",
    "resolve_data",
    "resolve_metadata",
    "safe_join",
    "scale_boxes",
]
