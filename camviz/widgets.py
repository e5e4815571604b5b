"""Browse class maps, thresholds and units in JupyterLab: an ipywidgets + plotly browser.

:class:`Browser` runs the network once per image (when the image is first shown) and keeps
the :class:`~camviz.result.CamResult`; every other control — class, threshold, opacity,
colour map, box and mask toggles, unit ranking, unit selection — redraws from that cached
result without running the network again.

Layout (each control carries a ``camviz-*`` CSS class, so tests and themes can find it)::

    [image picker] [class dropdown: top-k with probabilities] [any class by name]
    [threshold] [opacity] [colour map] [box] [mask]
    plotly FigureWidget: image + class map + mask outline + box   | unit panel: top units of
    [export: name, format, Save]                                  | the class, each a small map
                                                                  | with its mask, id, weight,
                                                                  | share of the logit

With ``stats`` (a :class:`~camviz.scan.UnitStats` from ``camviz.scan``) unit masks use each
unit's dataset quantile (Network Dissection), and selecting a unit shows its top dataset images
with their masks (given ``dataset``, the one that was scanned: the scan kept indices, not
pixels, so the first selection of a unit runs the network once on its few top images; the
gallery is cached after that). Without stats a unit's mask is its map above the threshold
slider times its maximum.

Example:
    >>> import camviz
    >>> net = camviz.load_model("resnet18", weights=None, device="cpu")  # doctest: +SKIP
    >>> camviz.browse(net, ["cat.jpg", "dog.jpg"])  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import os
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.measure import find_contours

from camviz.errors import CamvizError
from camviz.export import compose_view, save_image, write_figure
from camviz.localize import PAPER_THRESHOLD
from camviz.localize import boxes as _boxes
from camviz.localize import mask as _mask
from camviz.maps import min_max
from camviz.render import COLORMAPS, colormap_lut, outline, overlay
from camviz.result import CamResult, Units
from camviz.unitstats import check_match

__all__ = ["Browser", "browse", "box_path", "colorscale", "display_map", "mask_outline"]

TILE = 96
#: The heatmap goes to the page as block means of the full-resolution map, at most this many
#: cells on the long side, drawn with bilinear smoothing. plotly sends 2-d arrays as nested JSON
#: lists, whose walk was the largest part of a redraw (224 x 224: 11 ms per update, 112 x 112:
#: 2 ms in Python alone); the map is smooth anyway (bilinear from h x w feature cells). Mask
#: and box are computed on the full-resolution map.
DISPLAY_CELLS = 64
MASK_COLOR = "white"
BOX_COLOR = "#00ff00"
#: Failures of one image that the browser shows instead of raising (a bad file, a bad array,
#: an input the network cannot take).
IMAGE_FAILURES = (CamvizError, OSError, ValueError, RuntimeError)


# ------------------------------------------------------------------------- pure helpers


def colorscale(name: str, stops: int = 32) -> list[list[Any]]:
    """A plotly colour scale sampled from camviz's colour map LUT (same colours as exports).

    Example:
        >>> colorscale("gray", stops=2)
        [[0.0, 'rgb(0,0,0)'], [1.0, 'rgb(255,255,255)']]
    """
    lut = colormap_lut(name)
    pos = np.linspace(0.0, 1.0, stops)
    idx = np.rint(pos * 255).astype(int)
    return [[float(p), "rgb({},{},{})".format(*lut[i].tolist())] for p, i in zip(pos, idx,
                                                                                  strict=True)]


def mask_outline(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boundary polylines of a boolean mask (H, W) in pixel coordinates, NaN between pieces.

    Points lie half-way between a foreground pixel and its background neighbour
    (scikit-image's marching squares at level 0.5), so the line encloses exactly the mask.

    Example:
        >>> m = np.zeros((4, 4), bool); m[1:3, 1:3] = True
        >>> xs, ys = mask_outline(m)
        >>> float(np.nanmin(xs)), float(np.nanmax(xs))
        (0.5, 2.5)
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return np.zeros(0), np.zeros(0)
    padded = np.pad(m, 1).astype(np.float32)  # closes contours that touch the border
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for c in find_contours(padded, 0.5):
        ys.extend([c[:, 0] - 1, np.array([np.nan])])
        xs.extend([c[:, 1] - 1, np.array([np.nan])])
    return np.concatenate(xs[:-1]), np.concatenate(ys[:-1])


def box_path(box: Sequence[int] | None) -> tuple[list[float], list[float]]:
    """Closed outline of an inclusive pixel box (x0, y0, x1, y1), drawn around its pixels.

    Example:
        >>> box_path([2, 1, 4, 3])
        ([1.5, 4.5, 4.5, 1.5, 1.5], [0.5, 0.5, 3.5, 3.5, 0.5])
    """
    if box is None:
        return [], []
    x0, y0, x1, y1 = (float(v) for v in box)
    a0, a1, b0, b1 = x0 - 0.5, x1 + 0.5, y0 - 0.5, y1 + 0.5
    return [a0, a1, a1, a0, a0], [b0, b0, b1, b1, b0]


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run torch's CPU ops with ``n`` intra-op threads inside the block, then restore.

    Redraws work on one image's small tensors (a 224 x 224 map, K x 7 x 7 features), where
    intra-op threads cost more than they give: on a busy 2-core machine a 224 x 224 ``amax``
    took 8 ms with 2 threads and 5 us with one. The forward pass keeps all threads.
    """
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def display_map(cam01: np.ndarray, cells: int = DISPLAY_CELLS) -> tuple[np.ndarray, int]:
    """Block means of a map so its long side has at most ``cells`` cells; and the block size.

    Block ``(i, j)`` covers pixels ``[i*s, (i+1)*s) x [j*s, (j+1)*s)`` (a partial last block
    averages the pixels it has), so it is drawn centred at ``j*s + (s-1)/2``.

    Example:
        >>> z, s = display_map(np.arange(16, dtype=np.float32).reshape(4, 4), cells=2)
        >>> s, z.tolist()
        (2, [[2.5, 4.5], [10.5, 12.5]])
    """
    m = np.asarray(cam01, dtype=np.float32)
    s = max(1, -(-max(m.shape) // int(cells)))
    if s == 1:
        return m, 1
    t = torch.from_numpy(np.ascontiguousarray(m))[None, None]
    z = F.avg_pool2d(t, kernel_size=s, stride=s, ceil_mode=True)[0, 0]
    return z.numpy(), s


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _jpeg(arr: np.ndarray) -> bytes:
    """Pictures for the page go as JPEG (quality 92): 0.4 ms for 224 x 224 where PNG took 9 ms.
    Exports stay lossless (PNG/SVG/PDF)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _data_uri(arr: np.ndarray) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(_jpeg(arr)).decode("ascii")


def _label_of(item: Any, i: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return Path(item).name or str(item)
    return f"image {i}"


def _as_items(images: Any) -> list[Any]:
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            return [images]
        if images.ndim == 4:
            return list(images)
        raise CamvizError(f"a tensor of images must be (B, 3, H, W), got {tuple(images.shape)}")
    if isinstance(images, (str, os.PathLike)):
        from camviz.images import list_images

        return list(list_images([images]))
    if isinstance(images, (Image.Image, np.ndarray)):
        return [images]
    items = list(images)
    if not items:
        raise CamvizError("Browser needs at least one image (paths, PIL images or arrays)")
    return items


@dataclass
class _ImageView:
    """What one forward pass of one image leaves for drawing."""

    res: CamResult
    image: np.ndarray  # uint8 (H, W, 3), the network input de-normalised
    source: str  # the image as a PNG data URI for plotly
    thumb: np.ndarray  # uint8 image at tile size
    probs: torch.Tensor  # (C,) on the device


# ------------------------------------------------------------------------- the browser


class Browser(W.VBox):
    """Interactive class activation maps of ``images`` under ``net`` (see the module doc).

    ``images``: file paths, a folder, PIL images, arrays, or a tensor (B, 3, H, W) already
    preprocessed. ``stats``/``dataset``: the :class:`~camviz.scan.UnitStats` of a scan and the
    dataset scanned, for unit masks at dataset thresholds and the units' top images. ``k``: top
    classes listed; ``units``: unit tiles shown. The network runs once per image, when the
    image is first shown; ``forward_passes`` counts them. The results of the ``keep`` images
    shown last are kept (each holds its input and features: about 1 MB for resnet50 at 224 x
    224); an image shown again after it was dropped runs once more.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 8, 1), nn.Linear(8, 3), device="cpu")
        >>> b = Browser(net, torch.rand(2, 3, 16, 16), units=2)
        >>> b.threshold.value = 0.5
        >>> b.forward_passes, b.state["threshold"]
        (1, 0.5)
    """

    def __init__(
        self,
        net: Any,
        images: Any,
        stats: Any = None,
        *,
        dataset: Any = None,
        k: int = 5,
        units: int = 6,
        unit_order: str = "weight",
        threshold: float = PAPER_THRESHOLD,
        opacity: float = 0.5,
        cmap: str = "jet",
        show_box: bool = True,
        show_mask: bool = True,
        level: float | None = None,
        gallery: int = 6,
        size: int = 460,
        keep: int = 128,
    ) -> None:
        if cmap not in COLORMAPS:
            raise CamvizError(f"unknown colour map {cmap!r}; choose one of {COLORMAPS}")
        if unit_order not in ("weight", "contribution"):
            raise CamvizError(f"unit_order must be 'weight' or 'contribution', not {unit_order!r}")
        if stats is not None:
            check_match(stats, net)  # another network's statistics are refused
        self.net = net
        self.stats = stats
        self.dataset = dataset
        self.k = int(k)
        self.n_units = int(units)
        self.gallery_n = int(gallery)
        self.level = level
        self.items = _as_items(images)
        self.forward_passes = 0
        self.last_redraw_ms = 0.0
        self.last_forward_ms = 0.0
        self.keep = max(1, int(keep))
        self._cache: OrderedDict[int, _ImageView | Exception] = OrderedDict()
        self._shown: set[int] = set()
        self._galleries: dict[int, np.ndarray] = {}
        self._thresholds: torch.Tensor | None = None
        self._view: _ImageView | None = None
        self._cls: int | None = None
        self._cam01: np.ndarray | None = None
        self._units: Units | None = None
        self._unit_ids: list[int] = []
        self._selected_unit: int | None = None
        self._busy = False
        classes = list(net.classes)
        self._classes = classes

        # -- controls
        labels = [_label_of(it, i) for i, it in enumerate(self.items)]
        self.image_picker = W.Dropdown(options=[(lab, i) for i, lab in enumerate(labels)],
                                       value=0, description="image")
        self.class_picker = W.Dropdown(options=[], description="class")
        self.class_search = W.Combobox(options=classes, placeholder="any class by name",
                                       ensure_option=True, description="find")
        self.threshold = W.FloatSlider(value=float(threshold), min=0.0, max=1.0, step=0.01,
                                       readout_format=".2f", description="threshold")
        self.opacity = W.FloatSlider(value=float(opacity), min=0.0, max=1.0, step=0.01,
                                     readout_format=".2f", description="opacity")
        self.cmap = W.Dropdown(options=list(COLORMAPS), value=cmap, description="colours")
        self.show_box = W.Checkbox(value=bool(show_box), description="box", indent=False)
        self.show_mask = W.Checkbox(value=bool(show_mask), description="mask", indent=False)
        self.unit_order = W.ToggleButtons(
            options=[("by weight", "weight"), ("by contribution", "contribution")],
            value=unit_order)
        self.error = W.HTML(value="", layout=W.Layout(display="none"))
        self.status = W.HTML(value="")
        for w, cls in ((self.image_picker, "camviz-image"), (self.class_picker, "camviz-class"),
                       (self.class_search, "camviz-class-search"),
                       (self.threshold, "camviz-threshold"), (self.opacity, "camviz-opacity"),
                       (self.cmap, "camviz-cmap"), (self.show_box, "camviz-box"),
                       (self.show_mask, "camviz-mask"), (self.unit_order, "camviz-unit-order"),
                       (self.error, "camviz-error"), (self.status, "camviz-status")):
            w.add_class(cls)

        # -- main view
        self.figure = self._make_figure(size)
        self.figure.add_class("camviz-figure")

        # -- unit panel
        self.unit_header = W.HTML(value="").add_class("camviz-unit-header")
        self.unit_cards: list[tuple[W.Image, W.HTML, W.Button]] = []
        cards = []
        for j in range(self.n_units):
            img = W.Image(format="jpeg", width=TILE, height=TILE).add_class("camviz-unit-image")
            lab = W.HTML(value="").add_class("camviz-unit-label")
            btn = W.Button(description="show", layout=W.Layout(width=f"{TILE}px"))
            btn.add_class("camviz-unit-btn")
            btn.on_click(lambda _b, j=j: self._on_unit_button(j))
            self.unit_cards.append((img, lab, btn))
            card = W.VBox([img, lab, btn], layout=W.Layout(align_items="flex-start",
                                                            margin="2px"))
            cards.append(card.add_class("camviz-unit-card"))
        self.unit_detail = W.HTML(value="").add_class("camviz-unit-detail")
        self.unit_gallery = W.Image(format="png", layout=W.Layout(display="none"))
        self.unit_gallery.add_class("camviz-unit-gallery")
        grid_layout = W.Layout(grid_template_columns=f"repeat(3, {TILE + 8}px)")
        unit_panel = W.VBox(
            [self.unit_header, self.unit_order, W.GridBox(cards, layout=grid_layout),
             self.unit_detail, self.unit_gallery],
            layout=W.Layout(align_items="flex-start", margin="0 0 0 12px"),
        ).add_class("camviz-units")

        # -- export
        self.export_name = W.Text(value="camviz-view", description="save as")
        self.export_format = W.Dropdown(
            options=[("PNG", "png"), ("SVG", "svg"), ("PDF", "pdf"),
                     ("PNG composite (no browser)", "composite")], value="png")
        self.export_button = W.Button(description="Save", icon="download")
        self.export_status = W.HTML(value="")
        for w, cls in ((self.export_name, "camviz-export-name"),
                       (self.export_format, "camviz-export-format"),
                       (self.export_button, "camviz-export-btn"),
                       (self.export_status, "camviz-export-status")):
            w.add_class(cls)
        self.export_button.on_click(lambda _b: self._on_export())

        row = W.Layout(flex_flow="row wrap", align_items="center")
        super().__init__([
            W.HBox([self.image_picker, self.class_picker, self.class_search], layout=row),
            W.HBox([self.threshold, self.opacity, self.cmap, self.show_box, self.show_mask],
                   layout=row),
            self.error,
            W.HBox([W.VBox([self.figure, self.status]), unit_panel],
                   layout=W.Layout(align_items="flex-start")),
            W.HBox([self.export_name, self.export_format, self.export_button,
                    self.export_status], layout=row),
        ])
        self.add_class("camviz-browser")

        self.image_picker.observe(lambda _c: self._guard(self._on_image), "value")
        self.class_picker.observe(lambda _c: self._guard(self._on_class_picker), "value")
        self.class_search.observe(lambda _c: self._guard(self._on_class_search), "value")
        self.threshold.observe(lambda _c: self._redraw(self._draw_threshold), "value")
        self.opacity.observe(lambda _c: self._redraw(self._draw_opacity), "value")
        self.cmap.observe(lambda _c: self._redraw(self._draw_cmap), "value")
        self.show_box.observe(lambda _c: self._redraw(self._draw_toggles), "value")
        self.show_mask.observe(lambda _c: self._redraw(self._draw_toggles), "value")
        self.unit_order.observe(lambda _c: self._redraw(self._draw_units), "value")
        self._guard(self._on_image)

    # ---------------------------------------------------------------- public state

    @property
    def result(self) -> CamResult | None:
        """The cached result of the image shown (None when it failed to load)."""
        return None if self._view is None else self._view.res

    @property
    def class_index(self) -> int | None:
        """The class whose map is shown."""
        return self._cls

    @property
    def state(self) -> dict[str, Any]:
        """Everything the view shows, as plain values (also in the figure's layout.meta)."""
        return {
            "image": int(self.image_picker.value),
            "class": self._cls,
            "class_name": None if self._cls is None else self._classes[self._cls],
            "threshold": float(self.threshold.value),
            "opacity": float(self.opacity.value),
            "cmap": self.cmap.value,
            "box": bool(self.show_box.value),
            "mask": bool(self.show_mask.value),
            "unit_order": self.unit_order.value,
            "units": list(self._unit_ids),
            "unit": self._selected_unit,
            "error": self.error.value or None,
        }

    def select_class(self, cls: int | str) -> None:
        """Show the map of class ``cls`` (index or name), in or out of the top-k.

        Example:
            >>> browser.select_class("tabby")  # doctest: +SKIP
        """
        c = self._class_of(cls)
        self._guard(lambda: self._set_class(c))

    def select_unit(self, unit: int | None) -> None:
        """Select unit ``unit`` (any id): its details, and its top dataset images with stats.

        Example:
            >>> browser.select_unit(browser.state["units"][0])  # doctest: +SKIP
        """
        self._guard(lambda: self._show_unit(unit))

    # ---------------------------------------------------------------- figure

    def _make_figure(self, size: int) -> go.FigureWidget:
        try:
            import anywidget  # noqa: F401  (plotly >= 6 builds FigureWidget on it)
        except ImportError as err:
            raise CamvizError("the browser needs anywidget for plotly's FigureWidget: "
                              "pip install 'anywidget>=0.9'") from err
        blank = np.full((8, 8, 3), 240, np.uint8)
        layout = go.Layout(
            width=size, height=size + 30, margin=dict(l=4, r=4, t=36, b=4),
            title=dict(text="", font=dict(size=13), x=0.02, xanchor="left"),
            xaxis=dict(visible=False, constrain="domain"),
            yaxis=dict(visible=False, autorange="reversed", scaleanchor="x",
                       constrain="domain"),
            showlegend=False, plot_bgcolor="white", uirevision="camviz",
            meta=dict(camviz={}),
        )
        data = [
            go.Image(source=_data_uri(blank), name="image", hoverinfo="skip"),
            go.Heatmap(z=np.zeros((8, 8), np.float32), zmin=0.0, zmax=1.0, name="map",
                       zsmooth="best",
                       colorscale=colorscale(self.cmap.value), opacity=self.opacity.value,
                       colorbar=dict(thickness=10, len=0.8),
                       hovertemplate="x %{x} y %{y}<br>map %{z:.2f}<extra></extra>"),
            go.Scatter(x=[], y=[], mode="lines", name="mask", hoverinfo="skip",
                       line=dict(color=MASK_COLOR, width=2)),
            go.Scatter(x=[], y=[], mode="lines", name="box", hoverinfo="skip",
                       line=dict(color=BOX_COLOR, width=2)),
        ]
        return go.FigureWidget(data=data, layout=layout)

    def _meta(self) -> dict[str, Any]:
        s = self.state
        s.pop("error")
        return s

    # ---------------------------------------------------------------- event plumbing

    def _guard(self, fn: Any) -> None:
        """Run a handler unless one is already running (programmatic widget updates)."""
        if self._busy:
            return
        self._busy = True
        self._threads_outside = torch.get_num_threads()
        try:
            with _threads(1):
                fn()
        finally:
            self._busy = False

    def _redraw(self, fn: Any) -> None:
        if self._busy or self._view is None:
            return
        self._guard(fn)

    # ---------------------------------------------------------------- the image

    def _load(self, i: int) -> _ImageView | Exception:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        item = self.items[i]
        try:
            t0 = time.perf_counter()
            with _threads(getattr(self, "_threads_outside", torch.get_num_threads())):
                if isinstance(item, torch.Tensor):
                    res = self.net.run(item if item.ndim == 4 else item[None])
                else:
                    res = self.net.run([item])
            self.forward_passes += 1
            self.last_forward_ms = (time.perf_counter() - t0) * 1e3
            image = res.images()[0]
            h, w = image.shape[:2]
            scale = TILE / max(h, w)
            th, tw = max(1, round(h * scale)), max(1, round(w * scale))
            thumb = np.asarray(Image.fromarray(image).resize((tw, th), Image.BILINEAR))
            view: _ImageView | Exception = _ImageView(
                res=res, image=image, source=_data_uri(image), thumb=thumb,
                probs=res.probs[0])
        except IMAGE_FAILURES as err:
            view = err
        self._cache[i] = view
        self._shown.add(i)
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return view

    def _on_image(self) -> None:
        t0 = time.perf_counter()
        i = int(self.image_picker.value)
        view = self._load(i)
        if isinstance(view, Exception):
            self._show_error(i, view)
            return
        self._view = view
        self._hide_error()
        top = view.probs.topk(min(self.k, view.probs.shape[0]))
        self._topk = [int(c) for c in top.indices.tolist()]
        self._set_class(self._topk[0], new_image=True)
        self.last_redraw_ms = (time.perf_counter() - t0) * 1e3
        self.status.value = (
            f'<span style="font-size:11px;color:#666">{self.forward_passes} forward pass(es) '
            f"for {len(self._shown)} image(s) shown; class, threshold and unit changes reuse "
            "the cached pass</span>")

    def _show_error(self, i: int, err: Exception) -> None:
        self._view = None
        self._cls = None
        self._cam01 = None
        self._unit_ids = []
        name = _label_of(self.items[i], i)
        msg = f"could not show {name}: {err}"
        self.error.value = (f'<div style="color:#b00020;border:1px solid #b00020;padding:4px">'
                            f"{html.escape(msg)}</div>")
        self.error.layout.display = None
        self.class_picker.options = []
        for w in self._view_controls():
            w.disabled = True
        with self.figure.batch_update():
            self.figure.data[0].source = _data_uri(np.full((8, 8, 3), 240, np.uint8))
            for tr in self.figure.data[1:]:
                tr.visible = False
            self.figure.layout.title.text = html.escape(msg)
            self.figure.layout.meta = dict(camviz={"image": i, "error": msg})
        for img, lab, btn in self.unit_cards:
            img.value = b""
            lab.value = ""
            btn.disabled = True
        self.unit_header.value = ""
        self.unit_detail.value = ""
        self.unit_gallery.layout.display = "none"

    def _hide_error(self) -> None:
        self.error.value = ""
        self.error.layout.display = "none"
        for w in self._view_controls():
            w.disabled = False

    def _view_controls(self) -> list[W.Widget]:
        return [self.class_picker, self.class_search, self.threshold, self.opacity, self.cmap,
                self.show_box, self.show_mask, self.unit_order, self.export_button]

    # ---------------------------------------------------------------- class

    def _class_of(self, cls: int | str) -> int:
        if isinstance(cls, str):
            if cls not in self._classes:
                raise CamvizError(f"unknown class {cls!r}; see the net's classes "
                                  f"(e.g. {self._classes[:5]})")
            return self._classes.index(cls)
        c = int(cls)
        if not 0 <= c < len(self._classes):
            raise CamvizError(f"class index {c} out of range 0..{len(self._classes) - 1}")
        return c

    def _class_options(self, current: int) -> list[tuple[str, int]]:
        assert self._view is not None
        probs = self._view.probs
        opts = [(f"{self._classes[c]}  {float(probs[c]):.1%}", c) for c in self._topk]
        if current not in self._topk:
            opts.append((f"{self._classes[current]}  {float(probs[current]):.1%} "
                         f"(not in top {len(self._topk)})", current))
        return opts

    def _on_class_picker(self) -> None:
        if self.class_picker.value is not None and self._view is not None:
            self._set_class(int(self.class_picker.value))

    def _on_class_search(self) -> None:
        name = self.class_search.value
        if name in self._classes and self._view is not None:
            self._set_class(self._classes.index(name))

    def _set_class(self, c: int, new_image: bool = False) -> None:
        assert self._view is not None
        self._cls = c
        opts = self._class_options(c)
        if list(self.class_picker.options) != opts:
            self.class_picker.options = opts
        self.class_picker.value = c
        res = self._view.res
        cam = res.cams(c, size="input", normalize=True)[0, 0]
        self._cam01 = cam.float().cpu().numpy()
        self._selected_unit = None
        self.unit_detail.value = ""
        self.unit_gallery.layout.display = "none"
        with self.figure.batch_update():
            if new_image:
                self.figure.data[0].source = self._view.source
                self.figure.data[1].visible = True
            z, step = display_map(self._cam01)
            off = (step - 1) / 2.0
            hm = self.figure.data[1]
            hm.z, hm.x0, hm.dx, hm.y0, hm.dy = z, off, step, off, step
            self._draw_threshold_traces()
            self._draw_title()
        self._draw_units()

    # ---------------------------------------------------------------- threshold & co

    def _draw_title(self) -> None:
        assert self._view is not None and self._cls is not None
        p = float(self._view.probs[self._cls])
        name = html.escape(self._classes[self._cls])
        self.figure.layout.title.text = (
            f"<b>{name}</b>  p={p:.1%}  threshold {self.threshold.value:.2f}")
        self.figure.layout.meta = dict(camviz=self._meta())

    def _current_mask_and_box(self) -> tuple[np.ndarray, np.ndarray]:
        assert self._cam01 is not None
        t = float(self.threshold.value)
        return _mask(self._cam01, t), _boxes(self._cam01, t)

    def _draw_threshold_traces(self) -> None:
        fg, bb = self._current_mask_and_box()
        xs, ys = mask_outline(fg)
        bx, by = box_path(bb[0] if len(bb) else None)
        mtr, btr = self.figure.data[2], self.figure.data[3]
        mtr.x, mtr.y = xs, ys
        btr.x, btr.y = bx, by
        mtr.visible = bool(self.show_mask.value)
        btr.visible = bool(self.show_box.value)

    def _draw_threshold(self) -> None:
        with self.figure.batch_update():
            self._draw_threshold_traces()
            self._draw_title()
        if self.stats is None:  # unit masks follow the slider only without dataset thresholds
            self._draw_units()

    def _draw_opacity(self) -> None:
        with self.figure.batch_update():
            self.figure.data[1].opacity = float(self.opacity.value)
            self.figure.layout.meta = dict(camviz=self._meta())

    def _draw_cmap(self) -> None:
        with self.figure.batch_update():
            self.figure.data[1].colorscale = colorscale(self.cmap.value)
            self.figure.layout.meta = dict(camviz=self._meta())
        self._draw_units()

    def _draw_toggles(self) -> None:
        with self.figure.batch_update():
            self.figure.data[2].visible = bool(self.show_mask.value)
            self.figure.data[3].visible = bool(self.show_box.value)
            self.figure.layout.meta = dict(camviz=self._meta())

    # ---------------------------------------------------------------- units

    def _unit_thresholds(self) -> torch.Tensor | None:
        if self.stats is None:
            return None
        if self._thresholds is None:
            from camviz.scan import DEFAULT_LEVEL

            level = DEFAULT_LEVEL if self.level is None else self.level
            self._thresholds = self.stats.thresholds(level)
        return self._thresholds

    def _unit_tiles(self, ids: torch.Tensor) -> tuple[list[np.ndarray], np.ndarray]:
        """Tiles of unit maps f_k over the thumbnail with their masks; and mask areas."""
        assert self._view is not None
        view = self._view
        th, tw = view.thumb.shape[:2]
        raw = view.res.unit_maps(ids)  # (1, n, h, w)
        up = F.interpolate(raw, size=(th, tw), mode="bilinear", align_corners=False)
        t_units = self._unit_thresholds()
        if t_units is not None:
            from camviz.units import threshold_masks

            masks = threshold_masks(raw, t_units[ids.to(t_units.device)], size=(th, tw))[0]
        else:
            masks = _mask(up[0], float(self.threshold.value))
        maps01 = min_max(up[0]).cpu().numpy()
        masks_np = masks.cpu().numpy()
        tiles = []
        for j in range(maps01.shape[0]):
            tile = overlay(view.thumb, maps01[j], alpha=0.5, cmap=self.cmap.value)
            tiles.append(outline(tile, masks_np[j], color=(255, 255, 255)))
        return tiles, masks_np.reshape(len(tiles), -1).mean(1)

    def _draw_units(self) -> None:
        if self._view is None or self._cls is None or self.n_units == 0:
            return
        res = self._view.res
        u = res.units(self._cls, k=self.n_units, order=self.unit_order.value)
        self._units = u
        ids = u.ids[0]
        self._unit_ids = [int(i) for i in ids.tolist()]
        tiles, areas = self._unit_tiles(ids)
        weights = u.weights[0].tolist()
        shares = u.share[0].tolist()
        for j, (img, lab, btn) in enumerate(self.unit_cards):
            if j >= len(self._unit_ids):
                img.value, lab.value, btn.disabled = b"", "", True
                continue
            img.value = _jpeg(tiles[j])
            unit = self._unit_ids[j]
            lab.value = (f'<div style="font-size:11px;line-height:1.2">unit <b>{unit}</b><br>'
                         f"w {weights[j]:+.3g}<br>{shares[j]:+.1%} of logit<br>"
                         f"mask {float(areas[j]):.0%} of image</div>")
            btn.description = f"unit {unit}"
            btn.disabled = False
        name = html.escape(self._classes[self._cls])
        how = "weight w_ck" if self.unit_order.value == "weight" else "contribution on this image"
        mask_rule = ("masks: unit map above its dataset quantile" if self.stats is not None
                     else "masks: unit map above threshold x its max (pass stats= for dataset "
                     "thresholds)")
        self.unit_header.value = (f"<b>Top units of {name}</b> by {html.escape(how)}<br>"
                                  f'<span style="font-size:11px">{html.escape(mask_rule)}</span>')
        self.figure.layout.meta = dict(camviz=self._meta())

    def _on_unit_button(self, j: int) -> None:
        if j < len(self._unit_ids):
            self.select_unit(self._unit_ids[j])

    def _show_unit(self, unit: int | None) -> None:
        self._selected_unit = None if unit is None else int(unit)
        if unit is None or self._view is None or self._cls is None:
            self.unit_detail.value = ""
            self.unit_gallery.layout.display = "none"
            return
        unit = int(unit)
        if not 0 <= unit < self.net.num_units:
            raise CamvizError(f"unit {unit} out of range 0..{self.net.num_units - 1}")
        res = self._view.res
        w = float(res.weight[self._cls, unit])
        pooled = float(res.pooled()[0, unit])
        total = float(res.units(self._cls, k=1).total[0])
        share = w * pooled / total if total else float("nan")
        name = html.escape(self._classes[self._cls])
        head = (f"<b>unit {unit}</b> for <b>{name}</b>: weight {w:+.4g}, pooled activation "
                f"{pooled:.4g}, contribution {w * pooled:+.4g} ({share:+.1%} of logit)")
        if self.stats is None:
            self.unit_detail.value = head + (
                "<br><i>Give stats=camviz.scan(net, dataset) and dataset= to see this unit's "
                "top dataset images with their masks.</i>")
            self.unit_gallery.layout.display = "none"
            return
        idx, val = self.stats.top_images(unit, self.gallery_n)
        if self.dataset is None:
            rows = ", ".join(f"#{int(i)} ({float(v):.3g})" for i, v in zip(idx, val,
                                                                            strict=True))
            self.unit_detail.value = head + (
                f"<br>top dataset images (index, max): {html.escape(rows)}<br><i>Give "
                "dataset= (the scanned dataset) to see them with their masks.</i>")
            self.unit_gallery.layout.display = "none"
            return
        if unit not in self._galleries:
            from camviz.galleries import unit_gallery

            level = self.level
            kw = {} if level is None else {"level": level}
            try:
                with _threads(self._threads_outside):
                        panel = unit_gallery(self.net, self.dataset, self.stats, unit,
                                         n=self.gallery_n, **kw)
            except IMAGE_FAILURES as err:
                self.unit_detail.value = head + (
                    f'<br><span style="color:#b00020">{html.escape(str(err))}</span>')
                self.unit_gallery.layout.display = "none"
                return
            self._galleries[unit] = np.asarray(panel)
        self.unit_gallery.value = _png(self._galleries[unit])
        self.unit_gallery.layout.display = None
        self.unit_detail.value = head + (
            f"<br>its top {len(idx)} dataset images, masked at its dataset quantile:")
        self.figure.layout.meta = dict(camviz=self._meta())

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
        if self._view is None or self._cam01 is None or self._cls is None:
            raise CamvizError("nothing to export: the current image failed to load")
        p = float(self._view.probs[self._cls])
        title = f"{self._classes[self._cls]} p={p:.1%} t={self.threshold.value:.2f}"
        tiles: list[np.ndarray] = []
        labels: list[str] = []
        if units and self._unit_ids:
            ids = torch.tensor(self._unit_ids, device=self._view.res.device)
            tiles, _ = self._unit_tiles(ids)
            labels = [f"u{u}" for u in self._unit_ids]
        return compose_view(self._view.image, self._cam01, threshold=self.threshold.value,
                            opacity=self.opacity.value, cmap=self.cmap.value,
                            show_mask=self.show_mask.value, show_box=self.show_box.value,
                            title=title, tiles=tiles, tile_labels=labels)

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
        if self._view is None:
            raise CamvizError("nothing to export: the current image failed to load")
        if not p.suffix:
            p = p.with_suffix(f".{fmt}")
        return write_figure(self.to_figure(), p, format=fmt, scale=scale)

    def _on_export(self) -> None:
        name = self.export_name.value.strip() or "camviz-view"
        fmt = self.export_format.value
        target = Path(name)
        if not target.suffix:
            target = target.with_suffix(".png" if fmt == "composite" else f".{fmt}")
        self.export_status.value = "saving..."
        try:
            out = self.save(target, format=fmt)
        except CamvizError as err:
            self.export_status.value = (f'<span style="color:#b00020">'
                                        f"{html.escape(str(err))}</span>")
            return
        self.export_status.value = f"saved {html.escape(str(out))}"


def browse(net: Any, images: Any, stats: Any = None, **kwargs: Any) -> Browser:
    """Open a :class:`Browser` on ``images``; ``net`` is a GapNet or a model name.

    Example:
        >>> import camviz
        >>> camviz.browse("demo", ["a.png", "b.png"])  # doctest: +SKIP
    """
    if isinstance(net, str):
        from camviz.models import load_model

        net = load_model(net)
    return Browser(net, images, stats, **kwargs)
