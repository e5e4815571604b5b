"""One style for every paper figure: fonts, sizes, widths, colour maps, panels and saving.

Every figure function draws under :data:`STYLE` (a ``matplotlib.rc_context``, never a global
change), and :func:`save` writes under it again, so PDF text is embedded as TrueType
(``pdf.fonttype`` 42) and SVG text stays ``<text>`` elements (``svg.fonttype`` "none").

Example:
    >>> figure_width("column"), figure_width(5)
    (3.3, 5.0)
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib as mpl
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from camviz.errors import CamvizError
from camviz.figures.sizes import figure_format, figure_width
from camviz.files import temp_name

#: The rcParams every figure is drawn and saved under. DejaVu Sans ships with matplotlib, so
#: the text measures the same on every machine; change this dict to restyle every figure.
STYLE: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 7.0,
    "axes.titlesize": 7.0,
    "axes.labelsize": 7.0,
    "xtick.labelsize": 6.0,
    "ytick.labelsize": 6.0,
    "legend.fontsize": 6.0,
    "figure.titlesize": 8.0,
    "axes.titlepad": 2.0,
    "axes.labelpad": 2.0,
    "axes.linewidth": 0.5,
    "lines.linewidth": 1.0,
    "xtick.major.width": 0.5,
    "ytick.major.width": 0.5,
    "xtick.major.size": 2.0,
    "ytick.major.size": 2.0,
    "legend.frameon": False,
    "figure.constrained_layout.w_pad": 1.5 / 72,
    "figure.constrained_layout.h_pad": 1.5 / 72,
    "figure.constrained_layout.wspace": 0.02,
    "figure.constrained_layout.hspace": 0.02,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "svg.hashsalt": "camviz",
}
_BACKENDS = {"png": "agg", "pdf": "pdf", "svg": "svg"}
_METADATA: dict[str, dict[str, Any]] = {  # no dates: the same figure gives the same file
    "png": {"Software": "camviz"},
    "pdf": {"Creator": "camviz", "CreationDate": None},
    "svg": {"Creator": "camviz", "Date": None},
}
#: Colours of boxes and outlines: the CAM paper draws ground truth green and predictions red;
#: the line styles differ too (dashed / solid), for readers who cannot tell the two apart.
GT_COLOR, BOX_COLOR, MASK_COLOR, UNIT_COLOR = "#00c000", "#ff1a1a", "white", "#ffff00"
CAM_LABEL = "normalised CAM"
UNIT_LABEL = "unit activation"
_EM = 1 / 72  # one point in inches

F = TypeVar("F", bound=Callable[..., Any])


class PaperFigure(Figure):
    """A matplotlib Figure that shows itself in Jupyter as a PNG, with no pyplot involved."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        with mpl.rc_context(STYLE):
            self.savefig(buf, format="png", dpi=150, backend="agg")
        return buf.getvalue()


def styled(fn: F) -> F:
    """Run a figure function under :data:`STYLE` (text created inside takes its fonts)."""

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        with mpl.rc_context(STYLE):
            return fn(*args, **kwargs)

    return inner  # type: ignore[return-value]


def colormap(name: str | Colormap) -> Colormap:
    """A matplotlib colour map by name (CamvizError naming some choices when unknown).

    Example:
        >>> colormap("jet").name
        'jet'
    """
    if isinstance(name, Colormap):
        return name
    try:
        return mpl.colormaps[name]
    except KeyError:
        raise CamvizError(f"unknown colour map {name!r}; use one of matplotlib's, e.g. viridis "
                          "(the default), cividis, inferno, magma, turbo, jet or gray") from None


def save(fig: Figure, path: str | os.PathLike[str], dpi: float = 300) -> Path:
    """Write ``fig`` as PNG, PDF or SVG (from the suffix), atomically; returns the path.

    PNG is rendered by Agg at ``dpi`` (its pixel width is the figure's width in inches times
    ``dpi``); PDF embeds its fonts as TrueType and SVG keeps text as ``<text>`` elements, both
    with their images at ``dpi``. Files carry no date: the same figure made again gives the same
    bytes.

    Example:
        >>> import tempfile
        >>> fig = new_figure(2.0, 1.0)
        >>> save(fig, Path(tempfile.mkdtemp()) / "f.png", dpi=100).suffix
        '.png'
    """
    p = Path(path)
    fmt = figure_format(p)
    if not np.isfinite(dpi) or dpi <= 0:
        raise CamvizError(f"dpi must be > 0, got {dpi}")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(p)  # found and removed by the next run if this one is killed
    try:
        with mpl.rc_context(STYLE):
            fig.savefig(tmp, format=fmt, dpi=dpi, backend=_BACKENDS[fmt],
                        metadata=_METADATA[fmt])
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


# ------------------------------------------------------------------------------ layout


def new_figure(width: float | str, height: float) -> PaperFigure:
    """An empty figure of ``width`` (see :func:`figure_width`) x ``height`` inches, with an
    Agg canvas (nothing needs a display) and constrained layout.

    Example:
        >>> new_figure("column", 1.0).get_size_inches().tolist()
        [3.3, 1.0]
    """
    fig = PaperFigure(figsize=(figure_width(width), float(height)), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def text_height(lines: int) -> float:
    """Inches taken by ``lines`` lines of text at the style's font size, with padding.

    Example:
        >>> round(text_height(2), 2)
        0.27
    """
    return lines * float(STYLE["font.size"]) * 1.25 * _EM + 0.025 if lines else 0.0


def panel_grid(
    width: float | str,
    nrows: int,
    ncols: int,
    title_lines: int = 1,
    left: float = 0.0,
    cbar: bool = True,
    extra: float = 0.0,
    aspect: float = 1.0,
) -> tuple[PaperFigure, np.ndarray]:
    """A figure of ``nrows`` x ``ncols`` image panels at ``width``; its height follows.

    ``left``: inches for row labels; ``cbar``: room for a colour bar on the right; ``extra``:
    inches added to the height (a figure title, a legend); ``aspect``: the panels' height over
    width (1: square; a whole photo's own). Returns ``(fig, axes (nrows, ncols))``, the axes
    without ticks or frames.

    Example:
        >>> fig, axes = panel_grid("page", 2, 3)
        >>> axes.shape
        (2, 3)
    """
    w = figure_width(width)
    side = max((w - left - (0.5 if cbar else 0.05)) / ncols - 0.03, 0.2)
    fig = new_figure(w, nrows * (side * aspect + text_height(title_lines) + 0.03) + 0.05 + extra)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        clean(ax)
    return fig, axes


def clean(ax: Any) -> None:
    """No ticks, no frame: an axes for an image (labels still show).

    Example:
        >>> ax = new_figure(1, 1).add_subplot(); clean(ax); ax.get_xticks().tolist()
        []
    """
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def row_label(ax: Any, text: str) -> None:
    """Label a row of panels on its left, horizontally (several lines allowed).

    Example:
        >>> ax = new_figure(1, 1).add_subplot(); row_label(ax, "GAP"); ax.get_ylabel()
        'GAP'
    """
    ax.set_ylabel(text, rotation=0, ha="right", va="center", labelpad=3)


def colorbar(fig: Figure, axes: Any, cmap: str | Colormap, label: str) -> Any:
    """A colour bar from 0 to 1 beside ``axes``, labelled with what the colour means.

    Example:
        >>> fig = new_figure(2, 1); cb = colorbar(fig, fig.add_subplot(), "viridis", CAM_LABEL)
        >>> cb.ax.get_ylabel()
        'normalised CAM'
    """
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=colormap(cmap))
    axes_list = list(np.ravel(axes)) if isinstance(axes, (list, np.ndarray)) else axes
    cb = fig.colorbar(mappable, ax=axes_list, fraction=0.05, pad=0.01, aspect=25, label=label,
                      panchor=False)
    cb.set_ticks([0.0, 0.5, 1.0])
    cb.outline.set_linewidth(0.4)
    return cb


# ------------------------------------------------------------------------------ panels


def as_numpy(x: Any) -> np.ndarray:
    """A tensor (any device) or array as a numpy array, for drawing.

    Example:
        >>> as_numpy(torch.ones(2)).tolist()
        [1.0, 1.0]
    """
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()
    return np.asarray(x)


def image_panel(ax: Any, image: np.ndarray, title: str | None = None, label: str = "input"
                ) -> None:
    """Show an RGB image (H, W, 3) uint8 in ``ax``; the axes is labelled ``label``.

    Example:
        >>> ax = new_figure(1, 1).add_subplot()
        >>> image_panel(ax, np.zeros((4, 4, 3), np.uint8), "input"); ax.get_label()
        'input'
    """
    ax.imshow(image)
    if title is not None:
        ax.set_title(title)
    ax.set_label(label)


def map_panel(
    ax: Any,
    image: np.ndarray,
    map01: np.ndarray,
    cmap: str | Colormap,
    alpha: float,
    title: str | None = None,
    label: str = "map",
) -> None:
    """An image with a map in [0, 1] over it (``ax.images[-1]`` holds the map's values).

    Example:
        >>> ax = new_figure(1, 1).add_subplot(); m = np.eye(4, dtype=np.float32)
        >>> map_panel(ax, np.zeros((4, 4, 3), np.uint8), m, "viridis", 0.5)
        >>> bool((ax.images[-1].get_array() == m).all())
        True
    """
    if not 0.0 <= alpha <= 1.0:
        raise CamvizError(f"alpha (the map's opacity) must lie in [0, 1], got {alpha}")
    image_panel(ax, image, title, label)
    ax.imshow(map01, cmap=colormap(cmap), vmin=0.0, vmax=1.0, alpha=alpha)


def mask_panel(ax: Any, image: np.ndarray, mask: np.ndarray, title: str | None = None,
               keep: float = 0.35, label: str = "unit") -> None:
    """An image with a segmentation-style mask: outside dimmed to ``keep``, outlined.

    ``ax.images[-1]`` holds the mask (1 inside, 0 outside).

    Example:
        >>> ax = new_figure(1, 1).add_subplot(); m = np.zeros((4, 4), bool); m[1:3, 1:3] = True
        >>> mask_panel(ax, np.zeros((4, 4, 3), np.uint8), m)
        >>> int(ax.images[-1].get_array().sum())
        4
    """
    image_panel(ax, image, title, label)
    shade = ListedColormap([(0.0, 0.0, 0.0, 1.0 - keep), (0.0, 0.0, 0.0, 0.0)])
    ax.imshow(mask.astype(np.float32), cmap=shade, vmin=0.0, vmax=1.0, interpolation="nearest")
    outline(ax, mask, UNIT_COLOR)


def outline(ax: Any, mask: np.ndarray, color: str, width: float = 0.6) -> None:
    """Draw a boolean mask's boundary as vector lines (between its pixels).

    Example:
        >>> ax = new_figure(1, 1).add_subplot(); m = np.zeros((4, 4), bool); m[1:3, 1:3] = True
        >>> outline(ax, m, "white"); len(ax.collections)
        1
    """
    m = np.asarray(mask, dtype=np.float32)
    if m.min() < 0.5 <= m.max():
        ax.contour(m, levels=[0.5], colors=[color], linewidths=width)


def draw_box(ax: Any, box: Sequence[int], color: str, dashed: bool = False,
             width: float = 1.0) -> None:
    """Draw an inclusive pixel box (x0, y0, x1, y1) along the outer edges of its pixels.

    Example:
        >>> ax = new_figure(1, 1).add_subplot(); draw_box(ax, [1, 1, 2, 3], "red")
        >>> ax.patches[0].get_width(), ax.patches[0].get_height()
        (2, 3)
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                           edgecolor=color, linewidth=width, linestyle="--" if dashed else "-"))
