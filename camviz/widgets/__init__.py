"""Browse class maps, thresholds and units in JupyterLab: an ipywidgets + plotly browser.

:class:`Browser` runs the network once per image (when the image is first shown; the whole
photo by default, not the model's centre crop) and keeps the
:class:`~camviz.result.CamResult`; every other control — class, threshold, opacity, colour
map, box and mask toggles, unit ranking, unit selection — redraws from that cached result
without running the network again.

Layout (each control carries a ``camviz-*`` CSS class, so tests and themes can find it)::

    [image picker] [class dropdown: top-k with probabilities] [find: any class by part of its name]
    [threshold] [opacity] [colour map] [box] [mask]
    plotly FigureWidget: the photo + the map    | unit panel: top units of the class (by
    (the class's, or a selected unit's) + mask  | contribution on this image, or by weight),
    outline + box; a colour bar saying what the | each a picture (click it: the unit on the
    colour means, the threshold marked. Fixed   | main view), id, weight, share of the logit,
    size: the panel never squeezes it           | mask area; the unit's detail and gallery
    [save as: name, paper figure PDF / SVG / PNG or PIL composite, Save -> link]

With ``stats`` (a :class:`~camviz.scan.UnitStats` from ``camviz.scan``) unit masks use each
unit's dataset quantile at one level (``level``; None: the scan's own), for the tiles, the main
view and the gallery alike (Network Dissection), and selecting a unit shows its top dataset
images with their masks (given ``dataset``, the one that was scanned, checked against the scan:
the scan kept indices, not pixels, so the first selection of a unit runs the network once on its
few top images; the gallery is cached after that). Without stats a unit's mask is its map above
the threshold slider times its maximum.

The parts, bottom up (only the last five import ipywidgets or plotly):

* :mod:`~camviz.widgets.drawing`: outlines, box paths, display maps, colour scales, encodings;
* :mod:`~camviz.widgets.cache`: :class:`ResultCache`, one forward pass per image, LRU;
* :mod:`~camviz.widgets.tiles`: unit tiles, a unit on the main view, the checked gallery;
* :mod:`~camviz.widgets.view`: :class:`ViewModel`, a :class:`ViewState` in, a :class:`Frame`
  (everything shown, as plain values) out; :func:`~camviz.widgets.view.find_classes`;
* :mod:`~camviz.widgets.timing`: the drag throttle, saving off the kernel's thread;
* :mod:`~camviz.widgets.figure`: the plotly FigureWidget drawn from frames;
* :mod:`~camviz.widgets.panel`: the unit panel (cards, header, detail, gallery);
* :mod:`~camviz.widgets.controls`: *find*;
* :mod:`~camviz.widgets.saving`: exports from the view model (camviz.figures, PIL, plotly)
  and the *save as* bar;
* :mod:`~camviz.widgets.browser`: :class:`Browser`, which wires the controls to them.

``Browser`` and ``browse`` load ipywidgets and plotly on first use (PEP 562), so the view model
works where they are not installed.

Example:
    >>> import numpy as np
    >>> xs, ys = mask_outline(np.eye(2, dtype=bool))
    >>> box_path([0, 0, 1, 1])[0]
    [-0.5, 1.5, 1.5, -0.5, -0.5]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from camviz.widgets.cache import ResultCache
from camviz.widgets.drawing import box_path, colorscale, display_map, mask_outline
from camviz.widgets.view import ErrorFrame, Frame, ViewModel, ViewState

if TYPE_CHECKING:
    from camviz.widgets.browser import Browser, browse

__all__ = ["Browser", "browse", "box_path", "colorscale", "display_map", "mask_outline",
           "ResultCache", "ViewModel", "ViewState", "Frame", "ErrorFrame"]


def __getattr__(name: str) -> Any:
    if name in ("Browser", "browse"):
        from camviz.widgets import browser

        return getattr(browser, name)
    raise AttributeError(f"module 'camviz.widgets' has no attribute {name!r}")
