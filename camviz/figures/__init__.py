"""Paper figures with matplotlib: the CAM paper's panels, one call each, as vector PDF / SVG.

Each function returns a matplotlib ``Figure`` (no pyplot: nothing needs a display, and the
figure shows itself in Jupyter); :func:`save` writes it as PDF, SVG or PNG from the suffix.

* :func:`top_classes` - an image and the maps of its top-k classes (the paper's top-5 figure).
* :func:`class_units` - a class's top units, each over its top dataset images (section 5).
* :func:`compare` - the same images through several networks, one row each (GAP vs GMP).
* :func:`localization` - examples with the ground-truth and CAM boxes over the map.
* :func:`curves` - box accuracy against the threshold and pixel precision-recall.
* :func:`view` - a browser view (image, class, threshold, units) as a figure.

All figures share one style (:data:`STYLE`: DejaVu Sans at 7 pt, thin lines), set per figure
with ``matplotlib.rc_context``, never globally. Widths are inches or "column" (3.3 in) and
"page" (6.9 in); heights follow from the panels. PDF embeds its fonts as TrueType and SVG
keeps text as ``<text>``, so every label is real, selectable text. Colour bars say what the
colour means ("normalised CAM", "unit activation"); the colour map is viridis unless given
(perceptually uniform: see :data:`DEFAULT_CMAP`), ``cmap="jet"`` matches the paper.
Panels carry labels (``ax.get_label()``): "input", "map", "unit" for image panels, whose
``ax.images[-1]`` holds the values shown (the map, or the unit's mask).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from camviz.gapnet import GapNet
    >>> from camviz import figures
    >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 5), device="cpu")
    >>> fig = figures.top_classes(net.run(torch.rand(1, 3, 16, 16)), k=3, width="column")
    >>> figures.save(fig, "/tmp/camviz-top3.pdf")  # doctest: +SKIP
    PosixPath('/tmp/camviz-top3.pdf')
"""

from __future__ import annotations

from camviz.figures.gallery import class_units, rank_units
from camviz.figures.panels import compare, top_classes, view
from camviz.figures.style import (
    CAM_LABEL,
    DEFAULT_CMAP,
    STYLE,
    UNIT_LABEL,
    WIDTHS,
    PaperFigure,
    figure_format,
    figure_width,
    save,
)
from camviz.figures.wsol import curves, localization

__all__ = [
    "top_classes",
    "class_units",
    "compare",
    "localization",
    "curves",
    "view",
    "save",
    "figure_format",
    "figure_width",
    "rank_units",
    "STYLE",
    "DEFAULT_CMAP",
    "WIDTHS",
    "CAM_LABEL",
    "UNIT_LABEL",
    "PaperFigure",
]
