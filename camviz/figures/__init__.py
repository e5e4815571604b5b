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

import importlib
from typing import Any

from camviz.figures.sizes import DEFAULT_CMAP, WIDTHS, figure_format, figure_width

# The figure functions load matplotlib with their modules, on first use (PEP 562), so that
# the CLI can check sizes and formats without it.
_LAZY = {
    "class_units": "gallery", "rank_units": "gallery",
    "compare": "panels", "top_classes": "panels", "view": "panels",
    "curves": "wsol", "localization": "wsol",
    "CAM_LABEL": "style", "STYLE": "style", "UNIT_LABEL": "style", "PaperFigure": "style",
    "save": "style", "colormap": "style",
}

__all__ = ["DEFAULT_CMAP", "WIDTHS", "figure_format", "figure_width", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"camviz.figures.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'camviz.figures' has no attribute {name!r}")
