"""The JupyterLab browser: controls wired to the view model, the figure and the unit panel.

:class:`Browser` is thin: each control changes the state of its
:class:`~camviz.widgets.view.ViewModel`, which answers with a frame; the
:class:`~camviz.widgets.figure.MapFigure` and the :class:`~camviz.widgets.panel.UnitPanel`
draw that frame. The network runs once per image (the
:class:`~camviz.widgets.cache.ResultCache`), never for a redraw. Slider drags are throttled
(:class:`~camviz.widgets.timing.Throttle`: about ten redraws a second, the dropped value always
drawn), and saving runs off the kernel's thread (:mod:`~camviz.widgets.saving`).

Example:
    >>> import camviz
    >>> net = camviz.load_model("resnet18", weights=None, device="cpu")  # doctest: +SKIP
    >>> camviz.browse(net, ["cat.jpg", "dog.jpg"])  # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go
from PIL import Image

from camviz.gapnet import GapNet
from camviz.localize import PAPER_THRESHOLD
from camviz.models import load_model
from camviz.render import COLORMAPS
from camviz.result import CamResult
from camviz.widgets.cache import ResultCache
from camviz.widgets.controls import ClassFinder, tagged
from camviz.widgets.figure import MapFigure
from camviz.widgets.panel import UnitPanel
from camviz.widgets.saving import ExportBar, Exports
from camviz.widgets.timing import Throttle
from camviz.widgets.view import DEFAULT_UNIT_ORDER, ErrorFrame, Frame, Stats, ViewModel, ViewState

__all__ = ["Browser", "browse"]

_ROW = dict(flex_flow="row wrap", align_items="center")
#: Seconds between two redraws while a slider is dragged (about ten a second).
DRAG_INTERVAL = 0.1


class Browser(W.VBox):
    """Interactive class activation maps of ``images`` under ``net`` (see the package doc).

    ``images``: file paths, a folder, PIL images, arrays, or a tensor (B, 3, H, W) already
    preprocessed; ``labels``: the names they are listed under (default: file names, else
    "image i"). ``view``: "whole" (the default: each map over the whole photo, its shorter side
    resized as the model's transform does) or "crop" (the transform's centre crop, as the model
    was trained). ``stats``/``dataset``: the :class:`~camviz.scan.UnitStats` of a scan and the
    dataset scanned, for unit masks at dataset thresholds (quantile ``level``, None: the scan's
    own) and the units' top images. ``k``: top classes listed; ``units``: unit tiles shown,
    ranked by ``unit_order`` ("contribution" on this image by default, or "weight"). The network
    runs once per image, when the image is first shown; ``forward_passes`` counts them. The
    results of the ``keep`` images shown last are kept.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = GapNet(nn.Conv2d(3, 8, 1), nn.Linear(8, 3), device="cpu")
        >>> b = Browser(net, torch.rand(2, 3, 16, 16), units=2)
        >>> b.threshold.value = 0.5
        >>> b.forward_passes, b.state["threshold"]
        (1, 0.5)
    """

    def __init__(
        self, net: GapNet, images: Any, stats: Stats | None = None, *, dataset: Any = None,
        labels: Sequence[str] | None = None, k: int = 5, units: int = 6,
        unit_order: str = DEFAULT_UNIT_ORDER, threshold: float = PAPER_THRESHOLD,
        opacity: float = 0.5, cmap: str = "jet", show_box: bool = True, show_mask: bool = True,
        level: float | None = None, gallery: int = 6, size: int = 480, keep: int = 128,
        view: str = "whole",
    ) -> None:
        state = ViewState(threshold=float(threshold), opacity=float(opacity), cmap=cmap,
                          show_box=bool(show_box), show_mask=bool(show_mask),
                          unit_order=unit_order)
        self.net, self.stats, self.dataset, self.size = net, stats, dataset, int(size)
        self.cache = ResultCache(net, images, keep=keep, labels=labels, view=view)
        self.view = ViewModel(self.cache, stats, dataset=dataset, k=k, units=units,
                              gallery=gallery, level=level, state=state)
        self.last_redraw_ms = 0.0
        self._busy = False
        self._make_controls(state)
        self.map_figure = MapFigure(self.size, cmap=cmap, opacity=float(opacity))
        self.figure = self.map_figure.widget
        self.unit_panel = UnitPanel(units, self.select_unit, order=unit_order)
        self.unit_order = self.unit_panel.order
        self.unit_header, self.unit_cards = self.unit_panel.header, self.unit_panel.cards
        self.unit_detail, self.unit_gallery = self.unit_panel.detail, self.unit_panel.gallery
        self.exports = Exports(self.view, size=self.size)
        self.export = ExportBar(lambda path, fmt: self._settled().job(path, fmt))
        self.export_name, self.export_format = self.export.name, self.export.format
        self.export_button, self.export_status = self.export.button, self.export.status
        # the main view never shrinks, whatever the unit panel holds; the panel takes the rest
        main = tagged(W.VBox([self.figure, self.status], layout=W.Layout(
            flex="0 0 auto", width=f"{self.size + 4}px")), "camviz-main")
        super().__init__([
            W.HBox([self.image_picker, self.class_picker, self.finder],
                   layout=W.Layout(flex_flow="row wrap", align_items="flex-start")),
            W.HBox([self.threshold, self.opacity, self.cmap, self.show_box, self.show_mask],
                   layout=W.Layout(**_ROW)),
            self.error,
            W.HBox([main, self.unit_panel], layout=W.Layout(
                flex_flow="row wrap", align_items="flex-start", width="100%")),
            self.export,
        ])
        self.add_class("camviz-browser")
        self._wire()
        self._update()

    # ---------------------------------------------------------------- building

    def _make_controls(self, s: ViewState) -> None:
        labels = self.cache.labels
        self.image_picker = tagged(W.Dropdown(options=[(lab, i) for i, lab in enumerate(labels)],
                                              value=0, description="image"), "camviz-image")
        self.class_picker = tagged(W.Dropdown(options=[], description="class"), "camviz-class")
        self.finder = ClassFinder(self.view.classes, lambda c: self._update(cls=c))
        self.class_search = self.finder.box
        slider = dict(min=0.0, max=1.0, step=0.01, readout_format=".2f")
        self.threshold = tagged(W.FloatSlider(value=s.threshold, description="threshold",
                                              **slider), "camviz-threshold")
        self.opacity = tagged(W.FloatSlider(value=s.opacity, description="opacity", **slider),
                              "camviz-opacity")
        self.cmap = tagged(W.Dropdown(options=list(COLORMAPS), value=s.cmap,
                                      description="colours"), "camviz-cmap")
        self.show_box = tagged(W.Checkbox(value=s.show_box, description="box", indent=False),
                               "camviz-box")
        self.show_mask = tagged(W.Checkbox(value=s.show_mask, description="mask", indent=False),
                                "camviz-mask")
        self.error = tagged(W.HTML(value="", layout=W.Layout(display="none")), "camviz-error")
        self.status = tagged(W.HTML(value=""), "camviz-status")

    def _wire(self) -> None:
        """Each control sets one field of the view state (sliders through a throttle)."""
        self.drags = {name: Throttle(lambda v, name=name: self._update(**{name: float(v)}),
                                     DRAG_INTERVAL) for name in ("threshold", "opacity")}
        self.threshold.observe(lambda c: self.drags["threshold"](c["new"]), "value")
        self.opacity.observe(lambda c: self.drags["opacity"](c["new"]), "value")
        for widget, name, cast in (
            (self.image_picker, "image", int), (self.cmap, "cmap", str),
            (self.show_box, "show_box", bool), (self.show_mask, "show_mask", bool),
            (self.unit_order, "unit_order", str),
        ):
            widget.observe(lambda c, name=name, cast=cast: self._update(**{name: cast(c["new"])}),
                           "value")
        self.class_picker.observe(lambda c: self._picked(c["new"]), "value")

    def _picked(self, cls: int | None) -> None:
        """The class dropdown changed (by the user: a redraw sets it while busy)."""
        if cls is None or self._busy:
            return
        self.finder.clear()
        self._update(cls=int(cls))

    # ---------------------------------------------------------------- public state

    @property
    def forward_passes(self) -> int:
        """Forward passes run so far (one per image shown, again after it was dropped)."""
        return self.cache.forward_passes

    @property
    def last_forward_ms(self) -> float:
        return self.cache.last_forward_ms

    @property
    def result(self) -> CamResult | None:
        """The cached result of the image shown (None when it failed to load)."""
        if isinstance(self.view.frame, ErrorFrame):
            return None
        view = self.cache.get(self.view.state.image)
        return None if isinstance(view, Exception) else view.res

    @property
    def class_index(self) -> int | None:
        """The class whose map is shown."""
        return self.view.frame.state.cls

    @property
    def state(self) -> dict[str, Any]:
        """Everything the view shows, as plain values (also in the figure's layout.meta)."""
        self._settled()
        return {**self.view.frame.values(), "error": self.error.value or None}

    def _settled(self) -> Exports:
        """Draw a slider value the throttle still holds, so that what is read or saved is what
        the sliders say; the exports."""
        for drag in self.drags.values():
            drag.flush()
        return self.exports

    def select_class(self, cls: int | str) -> None:
        """Show the map of class ``cls`` (index or name), in or out of the top-k.

        Example:
            >>> browser.select_class("tabby")  # doctest: +SKIP
        """
        self._update(cls=self.view.class_of(cls))

    def select_unit(self, unit: int | None) -> None:
        """Show unit ``unit`` (any id) on the main view, with its details and, with stats, its
        top dataset images; None shows the class map again.

        Example:
            >>> browser.select_unit(browser.state["units"][0])  # doctest: +SKIP
        """
        self._update(unit=unit)

    # ---------------------------------------------------------------- drawing a frame

    def _update(self, **changes: Any) -> None:
        """Apply changes to the view state and draw the frame (unless a redraw is running:
        the widgets it sets report their changes too)."""
        if self._busy:
            return
        self._busy = True
        try:
            t0 = time.perf_counter()
            self._show(self.view.set(**changes))
            self.last_redraw_ms = (time.perf_counter() - t0) * 1e3
        finally:
            self._busy = False

    def _show(self, frame: Frame | ErrorFrame) -> None:
        if isinstance(frame, ErrorFrame):
            self.error.value = (f'<div style="color:#b00020;border:1px solid #b00020;'
                                f'padding:4px">{html.escape(frame.message)}</div>')
            self.error.layout.display = None
            self.class_picker.options = []
            self._set_enabled(False)
        else:
            self._set_enabled(True)
            options = list(frame.class_options)
            if list(self.class_picker.options) != options:
                self.class_picker.options = options
            self.class_picker.value = frame.state.cls
        self.map_figure.show(frame)
        self.unit_panel.show(frame)
        self.status.value = "" if isinstance(frame, ErrorFrame) else (
            f'<div style="font-size:11px;color:#666;line-height:1.3">'
            f"{self.cache.forward_passes} forward pass(es) for {self.cache.shown} image(s) "
            "shown; class, threshold and unit changes reuse the cached pass</div>")

    def _set_enabled(self, on: bool) -> None:
        if on and self.error.value:
            self.error.value = ""
            self.error.layout.display = "none"
        for w in (self.class_picker, self.class_search, self.threshold, self.opacity, self.cmap,
                  self.show_box, self.show_mask, self.unit_order, self.export_button):
            w.disabled = not on

    # ---------------------------------------------------------------- export

    def to_figure(self) -> go.Figure:
        """A static plotly copy of the main view, drawn from the view model's frame.

        Example:
            >>> browser.to_figure().write_html("view.html")  # doctest: +SKIP
        """
        return self._settled().to_figure()

    def paper_figure(self) -> Any:
        """The current view as a paper figure (:func:`camviz.figures.view`, matplotlib).

        Example:
            >>> camviz.figures.save(browser.paper_figure(), "view.pdf")  # doctest: +SKIP
        """
        return self._settled().paper_figure()

    def composite(self, units: bool = True) -> Image.Image:
        """The current view (and the unit tiles) as a PIL image, built without any browser.

        Example:
            >>> browser.composite().save("view.png")  # doctest: +SKIP
        """
        return self._settled().composite(units)

    def save(self, path: str | os.PathLike[str], format: str | None = None, dpi: float = 300.0,
             scale: float = 2.0) -> Path:
        """Save the current view and return the path (see :class:`~camviz.widgets.saving.
        Exports`): the paper figure as PDF, SVG or PNG by the suffix, or ``format``
        "composite" (PIL) or "plotly" (kaleido, needs a Chromium).

        Example:
            >>> browser.save("out/view.svg")  # doctest: +SKIP
        """
        return self._settled().job(Path(path), format, dpi=dpi, scale=scale)()


def browse(net: GapNet | str, images: Any, stats: Stats | None = None,
           **kwargs: Any) -> Browser:
    """Open a :class:`Browser` on ``images``; ``net`` is a GapNet or a model name.

    Example:
        >>> import camviz
        >>> camviz.browse("demo", ["a.png", "b.png"], labels=["A", "B"])  # doctest: +SKIP
    """
    if isinstance(net, str):
        net = load_model(net)
    return Browser(net, images, stats, **kwargs)
