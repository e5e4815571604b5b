"""Saving a view: plotly figures as PNG/SVG/PDF (kaleido, system Chromium) and PIL composites.

Two routes, so that a figure can always be saved:

* :func:`write_figure` writes a plotly figure with kaleido, which drives a Chromium (it finds
  Debian's ``/usr/bin/chromium`` by itself). About 2 s per call, since each call starts a
  browser.
* :func:`compose_view` builds the same view with numpy and PIL only (overlay, mask outline,
  box, caption, and optionally a row of unit tiles): no browser needed. :func:`save_image`
  writes it as PNG (or any format PIL knows from the suffix).

Example:
    >>> import numpy as np
    >>> img = np.zeros((8, 8, 3), np.uint8); cam = np.linspace(0, 1, 64).reshape(8, 8)
    >>> compose_view(img, cam, threshold=0.5, title="x").size[0] >= 8
    True
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from camviz import files
from camviz.errors import CamvizError
from camviz.localize import boxes as _boxes
from camviz.localize import mask as _mask
from camviz.render import draw_boxes, grid, outline, overlay

FIGURE_FORMATS = ("png", "svg", "pdf")
MASK_COLOR = (255, 255, 255)
BOX_COLOR = (0, 255, 0)


def _format_of(path: Path, format: str | None) -> str:
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt == "jpg":
        fmt = "jpeg"
    return fmt


def write_figure(
    fig: Any, path: str | os.PathLike[str], format: str | None = None, scale: float = 2.0
) -> Path:
    """Write a plotly figure as PNG, SVG or PDF with kaleido (uses the system Chromium).

    ``format`` defaults to the file's suffix. Raises :class:`CamvizError` saying what to do
    when kaleido or a Chromium is missing.

    Example:
        >>> import plotly.graph_objects as go
        >>> write_figure(go.Figure(), "/tmp/camviz-doc.svg")  # doctest: +SKIP
        PosixPath('/tmp/camviz-doc.svg')
    """
    p = Path(path)
    fmt = _format_of(p, format)
    if fmt not in FIGURE_FORMATS:
        raise CamvizError(f"a figure is saved as one of {FIGURE_FORMATS}, not {fmt!r}; "
                          "use compose_view() + save_image() for other image formats")
    try:
        import kaleido  # noqa: F401
    except ImportError as err:
        raise CamvizError("saving a figure needs kaleido: pip install 'kaleido>=1.0' "
                          "(or save the PIL composite, which needs no browser)") from err
    try:
        data = fig.to_image(format=fmt, scale=scale)
    except Exception as err:  # kaleido reports a missing browser in several ways
        raise CamvizError(
            f"kaleido could not write {p}: {err}. It needs a Chromium: install Debian's "
            "`chromium` (or set BROWSER_PATH), or save the PIL composite instead"
        ) from err
    files.remove_stale_temps(p.parent, name=glob.escape(p.name), recursive=False)
    files.write_bytes(p, data)  # atomic, umask permissions
    return p


def compose_view(
    image: Any,
    cam01: Any,
    threshold: float = 0.2,
    opacity: float = 0.5,
    cmap: str = "jet",
    show_mask: bool = True,
    show_box: bool = True,
    title: str = "",
    tiles: Sequence[Any] = (),
    tile_labels: Sequence[str] | None = None,
    min_side: int = 384,
) -> Image.Image:
    """The browser's view as a PIL image, without any browser.

    ``image`` uint8 (H, W, 3); ``cam01`` the class map in [0, 1] at the image size. The mask is
    ``cam01 > threshold * max`` (camviz.localize.mask), the box that of its largest region.
    Small images are enlarged by an integer factor (each pixel an s x s block, so mask and box
    stay pixel-exact) until the long side reaches ``min_side``. ``tiles`` (uint8 images, e.g.
    unit maps) form a second row under the main view.

    Example:
        >>> img = np.zeros((16, 16, 3), np.uint8); cam = np.zeros((16, 16)); cam[4:8, 4:8] = 1
        >>> compose_view(img, cam, tiles=[img, img], tile_labels=["a", "b"]).size[0] >= 16
        True
    """
    img = np.asarray(image, dtype=np.uint8)
    cam = np.asarray(cam01, dtype=np.float32)
    if cam.shape != img.shape[:2]:
        raise CamvizError(f"map {cam.shape} and image {img.shape[:2]} differ in size; "
                          "upsample the map to the image first (res.cams(size='input'))")
    s = max(1, -(-int(min_side) // max(img.shape[:2])))
    out = overlay(img, cam, alpha=float(opacity), cmap=cmap)
    fg = _mask(cam, threshold)
    bb = _boxes(cam, threshold)
    if s > 1:
        out = np.repeat(np.repeat(out, s, axis=0), s, axis=1)
        fg = np.repeat(np.repeat(fg, s, axis=0), s, axis=1)
        bb = bb * s + np.array([0, 0, s - 1, s - 1])
    if show_mask:
        out = outline(out, fg, color=MASK_COLOR)
    if show_box and len(bb):
        out = draw_boxes(out, bb, color=BOX_COLOR, width=2)
    main = grid([out], [title] if title else None, cols=1)
    if not tiles:
        return main
    row = grid(list(tiles), list(tile_labels) if tile_labels else None, cols=len(tiles))
    width = max(main.width, row.width)
    panel = Image.new("RGB", (width, main.height + row.height), (255, 255, 255))
    panel.paste(main, (0, 0))
    panel.paste(row, (0, main.height))
    return panel


def save_image(image: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Save a PIL image (PNG by default when the path has no suffix); returns the path.

    Example:
        >>> save_image(Image.new("RGB", (2, 2)), "/tmp/camviz-doc-composite")  # doctest: +SKIP
        PosixPath('/tmp/camviz-doc-composite.png')
    """
    p = Path(path)
    if not p.suffix:
        p = p.with_suffix(".png")
    fmt = Image.registered_extensions().get(p.suffix.lower())
    if fmt is None:
        raise CamvizError(f"cannot save an image as {p.suffix!r}: not an image format PIL "
                          "writes; use .png")
    files.remove_stale_temps(p.parent, name=glob.escape(p.name), recursive=False)
    try:  # atomic, umask permissions, a temp name the next run can clean up
        files.save_image(image, p, format=fmt)
    except (KeyError, ValueError) as err:
        raise CamvizError(f"cannot save an image as {p.suffix!r}: {err}; use .png") from err
    return p
