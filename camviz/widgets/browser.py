"""The JupyterLab browser: controls wired to the view model, the figure and the unit panel.

:class:`Browser` is thin: each control changes the state of its
:class:`~camviz.widgets.view.ViewModel`, which answers with a frame; the
:class:`~camviz.widgets.figure.MapFigure` and the :class:`~camviz.widgets.panel.UnitPanel`
draw that frame. The network runs once per image (the
:class:`~camviz.widgets.cache.ResultCache`), never for a redraw.

Example:
    >>> import camviz
    >>> net = camviz.load_model("resnet18", weights=None, device="cpu")  # doctest: +SKIP
    >>> camviz.browse(net, ["cat.jpg", "dog.jpg"])  # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go
from PIL import Image

from camviz.errors import CamvizError
from camviz.export import compose_view, save_image, write_figure
from camviz.gapnet import GapNet
from camviz.localize import PAPER_THRESHOLD
from camviz.models import load_model
from camviz.render import COLORMAPS
from camviz.result import CamResult
from camviz.widgets.cache import ResultCache
from camviz.widgets.figure import MapFigure
from camviz.widgets.panel import UnitPanel
from camviz.widgets.view import ErrorFrame, Frame, Stats, ViewModel, ViewState

__all__ = ["Browser", "ExportBar", "browse"]

_EXPORT_FORMATS = [("PNG", "png"), ("SVG", "svg"), ("PDF", "pdf"),
                   ("PNG composite (no browser)", "composite")]
_ROW = dict(flex_flow="row wrap", align_items="center")


def _tagged(widget: W.Widget, css: str) -> Any:
    widget.add_class(css)
    return widget


class ExportBar(W.HBox):
    """Name, format and Save button; ``save(path, format)`` does the saving.

    Example:
        >>> bar = ExportBar(lambda path, format: path)
        >>> bar.name.value = "out/view"; bar.button.click(); bar.status.value
        'saved out/view.png'
    """

    def __init__(self, save: Callable[[Path, str], Path]) -> None:
        self.save = save
        self.name = _tagged(W.Text(value="camviz-view", description="save as"),
                            "camviz-export-name")
        self.format = _tagged(W.Dropdown(options=_EXPORT_FORMATS, value="png"),
                              "camviz-export-format")
        self.button = _tagged(W.Button(description="Save", icon="download"),
                              "camviz-export-btn")
        self.status = _tagged(W.HTML(value=""), "camviz-export-status")
        self.button.on_click(lambda _b: self._clicked())
        super().__init__([self.name, self.format, self.button, self.status],
                         layout=W.Layout(**_ROW))

    def _clicked(self) -> None:
        fmt = self.format.value
        target = Path(self.name.value.strip() or "camviz-view")
        if not target.suffix:
            target = target.with_suffix(".png" if fmt == "composite" else f".{fmt}")
        self.status.value = "saving..."
        try:
            out = self.save(target, fmt)
        except CamvizError as err:
            self.status.value = f'<span style="color:#b00020">{html.escape(str(err))}</span>'
            return
        self.status.value = f"saved {html.escape(str(out))}"


class Browser(W.VBox):
    """Interactive class activation maps of ``images`` under ``net`` (see the package doc).

    ``images``: file paths, a folder, PIL images, arrays, or a tensor (B, 3, H, W) already
    preprocessed. ``stats``/``dataset``: the :class:`~camviz.scan.UnitStats` of a scan and the
    dataset scanned, for unit masks at dataset thresholds (quantile ``level``, None: the scan's
    own) and the units' top images. ``k``: top classes listed; ``units``: unit tiles shown. The
    network runs once per image, when the image is first shown; ``forward_passes`` counts them.
    The results of the ``keep`` images shown last are kept.

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
        k: int = 5, units: int = 6, unit_order: str = "weight",
        threshold: float = PAPER_THRESHOLD, opacity: float = 0.5, cmap: str = "jet",
        show_box: bool = True, show_mask: bool = True, level: float | None = None,
        gallery: int = 6, size: int = 460, keep: int = 128,
    ) -> None:
        state = ViewState(threshold=float(threshold), opacity=float(opacity), cmap=cmap,
                          show_box=bool(show_box), show_mask=bool(show_mask),
                          unit_order=unit_order)
        self.net, self.stats, self.dataset = net, stats, dataset
        self.cache = ResultCache(net, images, keep=keep)
        self.view = ViewModel(self.cache, stats, dataset=dataset, k=k, units=units,
                              gallery=gallery, level=level, state=state)
        self.last_redraw_ms = 0.0
        self._busy = False
        self._make_controls(state)
        self.map_figure = MapFigure(size, cmap=cmap, opacity=float(opacity))
        self.figure = self.map_figure.widget
        self.unit_panel = UnitPanel(units, self.select_unit, order=unit_order)
        self.unit_order = self.unit_panel.order
        self.unit_header, self.unit_cards = self.unit_panel.header, self.unit_panel.cards
        self.unit_detail, self.unit_gallery = self.unit_panel.detail, self.unit_panel.gallery
        bar = ExportBar(self.save)
        self.export_name, self.export_format = bar.name, bar.format
        self.export_button, self.export_status = bar.button, bar.status
        super().__init__([
            W.HBox([self.image_picker, self.class_picker, self.class_search],
                   layout=W.Layout(**_ROW)),
            W.HBox([self.threshold, self.opacity, self.cmap, self.show_box, self.show_mask],
                   layout=W.Layout(**_ROW)),
            self.error,
            W.HBox([W.VBox([self.figure, self.status]), self.unit_panel],
                   layout=W.Layout(align_items="flex-start")),
            bar,
        ])
        self.add_class("camviz-browser")
        self._wire()
        self._update()

    # ---------------------------------------------------------------- building

    def _make_controls(self, s: ViewState) -> None:
        labels = self.cache.labels
        self.image_picker = _tagged(W.Dropdown(options=[(lab, i) for i, lab in enumerate(labels)],
                                               value=0, description="image"), "camviz-image")
        self.class_picker = _tagged(W.Dropdown(options=[], description="class"), "camviz-class")
        self.class_search = _tagged(
            W.Combobox(options=self.view.classes, placeholder="any class by name",
                       ensure_option=True, description="find"), "camviz-class-search")
        self.threshold = _tagged(W.FloatSlider(value=s.threshold, min=0.0, max=1.0, step=0.01,
                                               readout_format=".2f", description="threshold"),
                                 "camviz-threshold")
        self.opacity = _tagged(W.FloatSlider(value=s.opacity, min=0.0, max=1.0, step=0.01,
                                             readout_format=".2f", description="opacity"),
                               "camviz-opacity")
        self.cmap = _tagged(W.Dropdown(options=list(COLORMAPS), value=s.cmap,
                                       description="colours"), "camviz-cmap")
        self.show_box = _tagged(W.Checkbox(value=s.show_box, description="box", indent=False),
                                "camviz-box")
        self.show_mask = _tagged(W.Checkbox(value=s.show_mask, description="mask",
                                            indent=False), "camviz-mask")
        self.error = _tagged(W.HTML(value="", layout=W.Layout(display="none")), "camviz-error")
        self.status = _tagged(W.HTML(value=""), "camviz-status")

    def _wire(self) -> None:
        """Each control sets one field of the view state."""
        for widget, name, cast in (
            (self.image_picker, "image", int), (self.threshold, "threshold", float),
            (self.opacity, "opacity", float), (self.cmap, "cmap", str),
            (self.show_box, "show_box", bool), (self.show_mask, "show_mask", bool),
            (self.unit_order, "unit_order", str),
        ):
            widget.observe(lambda c, name=name, cast=cast: self._update(**{name: cast(c["new"])}),
                           "value")
        self.class_picker.observe(
            lambda c: c["new"] is not None and self._update(cls=int(c["new"])), "value")
        self.class_search.observe(
            lambda c: c["new"] in self.view.classes and self._update(cls=c["new"]), "value")

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
        return {**self.view.frame.values(), "error": self.error.value or None}

    def select_class(self, cls: int | str) -> None:
        """Show the map of class ``cls`` (index or name), in or out of the top-k.

        Example:
            >>> browser.select_class("tabby")  # doctest: +SKIP
        """
        self._update(cls=self.view.class_of(cls))

    def select_unit(self, unit: int | None) -> None:
        """Select unit ``unit`` (any id): its details, and its top dataset images with stats.

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
            self._show_error(frame)
        else:
            self._set_enabled(True)
            options = list(frame.class_options)
            if list(self.class_picker.options) != options:
                self.class_picker.options = options
            self.class_picker.value = frame.state.cls
        self.map_figure.show(frame)
        self.unit_panel.show(frame)
        self.status.value = (
            f'<span style="font-size:11px;color:#666">{self.cache.forward_passes} forward '
            f"pass(es) for {self.cache.shown} image(s) shown; class, threshold and unit "
            "changes reuse the cached pass</span>")

    def _show_error(self, frame: ErrorFrame) -> None:
        self.error.value = (f'<div style="color:#b00020;border:1px solid #b00020;padding:4px">'
                            f"{html.escape(frame.message)}</div>")
        self.error.layout.display = None
        self.class_picker.options = []
        self._set_enabled(False)

    def _set_enabled(self, on: bool) -> None:
        if on and self.error.value:
            self.error.value = ""
            self.error.layout.display = "none"
        for w in (self.class_picker, self.class_search, self.threshold, self.opacity, self.cmap,
                  self.show_box, self.show_mask, self.unit_order, self.export_button):
            w.disabled = not on

    # ---------------------------------------------------------------- export

    def to_figure(self) -> go.Figure:
        """A static copy of the main view (a plotly Figure), e.g. for ``write_image``.

        Example:
            >>> browser.to_figure().write_html("view.html")  # doctest: +SKIP
        """
        return go.Figure(self.figure.to_dict())

    def composite(self, units: bool = True) -> Image.Image:
        """The current view (and the unit tiles) as a PIL image, built without any browser.

        Example:
            >>> browser.composite().save("view.png")  # doctest: +SKIP
        """
        frame = self.view.frame
        if not isinstance(frame, Frame):
            raise CamvizError("nothing to export: the current image failed to load")
        s, tiles = frame.state, (frame.units if units else ())
        return compose_view(frame.image, frame.cam01, threshold=s.threshold, opacity=s.opacity,
                            cmap=s.cmap, show_mask=s.show_mask, show_box=s.show_box,
                            title=frame.caption, tiles=[t.tile for t in tiles],
                            tile_labels=[f"u{t.unit}" for t in tiles])

    def save(self, path: str | os.PathLike[str], format: str | None = None,
             scale: float = 2.0) -> Path:
        """Save the current view: "png", "svg", "pdf" (plotly + kaleido, needs a Chromium) or
        "composite" (a PNG made with PIL, no browser). ``format`` defaults to the suffix.

        Example:
            >>> browser.save("out/view.svg")  # doctest: +SKIP
        """
        p = Path(path)
        fmt = (format or p.suffix.lstrip(".") or "png").lower()
        if fmt == "composite":
            return save_image(self.composite(), p if p.suffix else p.with_suffix(".png"))
        if isinstance(self.view.frame, ErrorFrame):
            raise CamvizError("nothing to export: the current image failed to load")
        if not p.suffix:
            p = p.with_suffix(f".{fmt}")
        return write_figure(self.to_figure(), p, format=fmt, scale=scale)


def browse(net: GapNet | str, images: Any, stats: Stats | None = None,
           **kwargs: Any) -> Browser:
    """Open a :class:`Browser` on ``images``; ``net`` is a GapNet or a model name.

    Example:
        >>> import camviz
        >>> camviz.browse("demo", ["a.png", "b.png"])  # doctest: +SKIP
    """
    if isinstance(net, str):
        net = load_model(net)
    return Browser(net, images, stats, **kwargs)
