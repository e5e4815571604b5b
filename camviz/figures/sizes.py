"""What a paper figure's size and file are, without matplotlib (the CLI checks its options
with these before any network runs).

Example:
    >>> figure_width("column"), figure_format("fig.svg")
    (3.3, 'svg')
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from camviz.errors import CamvizError

__all__ = ["DEFAULT_CMAP", "WIDTHS", "FORMATS", "figure_width", "figure_format"]

#: The colour map by default: viridis is perceptually uniform (equal steps of the map look
#: like equal steps of colour, so no false edges such as jet's bright cyan and yellow bands),
#: its lightness rises monotonically (it still reads in greyscale print) and it stays legible
#: with the common colour-vision deficiencies. Pass ``cmap="jet"`` for the paper's look.
DEFAULT_CMAP = "viridis"
#: Figure widths in inches: one column and two columns (a page) of a two-column paper.
WIDTHS = {"column": 3.3, "page": 6.9}
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


def figure_width(width: float | str) -> float:
    """Inches for a width: a number, ``"column"`` (3.3 in) or ``"page"`` (6.9 in).

    Example:
        >>> figure_width("page")
        6.9
    """
    if isinstance(width, str) and width in WIDTHS:
        return WIDTHS[width]
    try:
        w = float(width)
    except (TypeError, ValueError):
        w = -1.0
    if not math.isfinite(w) or w <= 0:
        raise CamvizError(f"width must be inches > 0, 'column' (3.3 in) or 'page' (6.9 in); "
                          f"got {width!r}")
    return w


def figure_format(path: str | os.PathLike[str]) -> str:
    """The format a figure is saved in, from the file's suffix: "png", "pdf" or "svg".

    Example:
        >>> figure_format("fig.PDF")
        'pdf'
    """
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        what = f"'{p.suffix}'" if p.suffix else "a file without a suffix"
        raise CamvizError(f"cannot save a figure as {what} ({p}); name it .pdf, .svg or .png")
    return fmt
