"""The main view as a plotly figure: image, class map, mask outline and box, drawn from a frame.

:class:`MapFigure` holds the FigureWidget of the browser and applies each new
:class:`~camviz.widgets.view.Frame` to it in one ``batch_update`` (one message to the page),
sending only the parts that differ from the frame applied before. :func:`static_figure` draws a
frame on a plain ``go.Figure`` the same way (for exports without a widget).

Traces: 0 image, 1 heatmap (the class map, or the selected unit's), 2 mask outline, 3 box; the
heatmap's colour bar says what the colour means and marks the mask's threshold. The plot keeps
the image's aspect at a fixed width (:func:`figure_height`), its top under the title.
``layout.meta["camviz"]`` holds the frame's state as plain values (the browser test reads it in
the page).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from camviz.gapnet import GapNet
    >>> from camviz.widgets.cache import ResultCache
    >>> from camviz.widgets.view import ViewModel
    >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 3), device="cpu")
    >>> frame = ViewModel(ResultCache(net, torch.rand(1, 3, 8, 8))).frame
    >>> fig = static_figure(frame)
    >>> [tr.name for tr in fig.data], fig.layout.meta["camviz"]["class"] == frame.state.cls
    (['image', 'map', 'mask', 'box'], True)
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import plotly.graph_objects as go

from camviz.errors import CamvizError
from camviz.widgets.drawing import box_path, colorscale, data_uri
from camviz.widgets.view import ErrorFrame, Frame

__all__ = ["MASK_COLOR", "BOX_COLOR", "CBAR_ROOM", "MapFigure", "static_figure", "figure_height",
           "colorbar"]

MASK_COLOR = "white"
BOX_COLOR = "#00ff00"
_BLANK = np.full((8, 8, 3), 240, np.uint8)


#: Room on the right of the plot for the colour bar, its ticks and its title (pixels): a fixed
#: margin (plotly does not widen it), so the plot's size, and the image's, is known exactly.
CBAR_ROOM = 112
_MARGIN = dict(l=4, r=CBAR_ROOM, t=30, b=4, autoexpand=False)


def figure_height(size: int, image_shape: tuple[int, ...]) -> int:
    """The figure's height for an image of ``image_shape`` at width ``size``: the plot keeps the
    image's aspect, so no blank band is left between the title and the image.

    Example:
        >>> figure_height(460, (300, 451)), figure_height(460, (224, 224))
        (263, 378)
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    plot_w = size - _MARGIN["l"] - _MARGIN["r"]
    plot_h = min(plot_w * h / max(w, 1), 1.5 * plot_w)  # very tall images: narrower, not taller
    return int(round(plot_h)) + _MARGIN["t"] + _MARGIN["b"]


def _layout(size: int) -> go.Layout:
    return go.Layout(
        width=size, height=figure_height(size, (1, 1)), margin=_MARGIN,
        title=dict(text="", font=dict(size=13), x=0.01, xanchor="left", y=0.99, yanchor="top",
                   yref="container"),
        xaxis=dict(visible=False, constrain="domain", constraintoward="left", autorange=False,
                   range=[-0.5, 0.5]),
        yaxis=dict(visible=False, autorange=False, range=[0.5, -0.5], scaleanchor="x",
                   constrain="domain", constraintoward="top"),
        showlegend=False, plot_bgcolor="white", uirevision="camviz", meta=dict(camviz={}),
    )


def colorbar(label: str, mark: float | None) -> dict[str, Any]:
    """The colour bar: titled with what the colour means, the mask's threshold marked.

    Ticks at 0, 0.5 and 1 (those within 0.1 of the mark give way to it).

    Example:
        >>> colorbar("normalised CAM", 0.08)["ticktext"]
        ['0.5', '1', '<b>0.08 mask</b>']
    """
    vals = [v for v in (0.0, 0.5, 1.0) if mark is None or abs(v - mark) > 0.1]
    text = [f"{v:g}" for v in vals]
    if mark is not None:
        vals.append(float(mark))
        text.append(f"<b>{mark:.2f} mask</b>")
    return dict(thickness=10, len=1.0, lenmode="fraction", y=1.0, yanchor="top", x=1.0,
                xanchor="left", xpad=6,
                title=dict(text=html.escape(label), side="right", font=dict(size=11)),
                tickvals=vals, ticktext=text, ticks="outside", ticklen=3,
                tickfont=dict(size=10))


def _traces(cmap: str, opacity: float) -> list[Any]:
    return [
        go.Image(source=data_uri(_BLANK), name="image", hoverinfo="skip"),
        go.Heatmap(z=np.zeros((8, 8), np.float32), zmin=0.0, zmax=1.0, name="map",
                   zsmooth="best", colorscale=colorscale(cmap), opacity=opacity,
                   colorbar=colorbar("", None),
                   hovertemplate="x %{x} y %{y}<br>map %{z:.2f}<extra></extra>"),
        go.Scatter(x=[], y=[], mode="lines", name="mask", hoverinfo="skip",
                   line=dict(color=MASK_COLOR, width=2)),
        go.Scatter(x=[], y=[], mode="lines", name="box", hoverinfo="skip",
                   line=dict(color=BOX_COLOR, width=2)),
    ]


def _apply(fig: Any, frame: Frame, last: Frame | None) -> None:
    """Set on ``fig`` what differs between ``frame`` and ``last`` (None: everything)."""
    image, heat, mask, box = fig.data
    s, old = frame.state, (None if last is None else last.state)
    if last is None:
        heat.visible = True
    if last is None or frame.source is not last.source:
        image.source = frame.source
    if last is None or frame.image.shape != last.image.shape:
        h, w = frame.image.shape[:2]
        fig.layout.height = figure_height(int(fig.layout.width), frame.image.shape)
        # the axes span the image exactly: autorange pads around a box on the image's edge
        fig.layout.xaxis.range = [-0.5, w - 0.5]
        fig.layout.yaxis.range = [h - 0.5, -0.5]
    if last is None or (frame.main.label, frame.main.mark) != (last.main.label, last.main.mark):
        heat.colorbar = colorbar(frame.main.label, frame.main.mark)
    if last is None or frame.heat is not last.heat:
        off = (frame.heat_step - 1) / 2.0
        heat.z, heat.x0, heat.y0 = frame.heat, off, off
        heat.dx = heat.dy = frame.heat_step
    if old is None or s.opacity != old.opacity:
        heat.opacity = float(s.opacity)
    if old is None or s.cmap != old.cmap:
        heat.colorscale = colorscale(s.cmap)
    if last is None or frame.outline is not last.outline:
        mask.x, mask.y = frame.outline
    if last is None or frame.box is not last.box:
        box.x, box.y = box_path(frame.box)
    if old is None or (s.show_mask, s.show_box) != (old.show_mask, old.show_box):
        mask.visible, box.visible = bool(s.show_mask), bool(s.show_box)
    if last is None or frame.title != last.title:
        fig.layout.title.text = frame.title
    fig.layout.meta = dict(camviz=frame.values())


def static_figure(frame: Frame, size: int = 480) -> go.Figure:
    """A plain plotly figure of a frame: what the browser's FigureWidget shows for it.

    Example:
        >>> static_figure(frame).layout.title.text == frame.title  # doctest: +SKIP
        True
    """
    if not isinstance(frame, Frame):
        raise CamvizError("nothing to draw: the frame is an error (the image failed to load)")
    fig = go.Figure(data=_traces(frame.state.cmap, frame.state.opacity), layout=_layout(size))
    _apply(fig, frame, None)
    return fig


class MapFigure:
    """The browser's FigureWidget (``widget``), redrawn from frames.

    Example:
        >>> mf = MapFigure(size=300)  # doctest: +SKIP
        >>> mf.show(frame); mf.widget.data[1].z.shape  # doctest: +SKIP
    """

    def __init__(self, size: int = 480, cmap: str = "jet", opacity: float = 0.5) -> None:
        try:
            import anywidget  # noqa: F401  (plotly >= 6 builds FigureWidget on it)
        except ImportError as err:
            raise CamvizError("the browser needs anywidget for plotly's FigureWidget: "
                              "pip install 'anywidget>=0.9'") from err
        self.widget = go.FigureWidget(data=_traces(cmap, opacity), layout=_layout(size))
        self.widget.add_class("camviz-figure")
        self._last: Frame | None = None

    def show(self, frame: Frame | ErrorFrame) -> None:
        """Draw ``frame`` in one batch update: only the parts that changed since the last."""
        if isinstance(frame, ErrorFrame):
            self._show_error(frame)
            return
        with self.widget.batch_update():
            _apply(self.widget, frame, self._last)
        self._last = frame

    def _show_error(self, frame: ErrorFrame) -> None:
        with self.widget.batch_update():
            self.widget.data[0].source = data_uri(_BLANK)
            for tr in self.widget.data[1:]:
                tr.visible = False
            self.widget.layout.title.text = ""  # the browser shows the message, once
            self.widget.layout.meta = dict(camviz={"image": frame.state.image,
                                                   "error": frame.message})
        self._last = None
