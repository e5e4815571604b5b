"""Saving the browser's view: the paper figure (camviz.figures), the PIL composite, and plotly.

Every export is built from the browser's own state (the view model's frame and the cached
result), never from the FigureWidget's synced dict, which can lack a trace's ``x`` after two
views in a row with the same box x values (issue 17: saved boxes came out as a sliver).

* "pdf", "svg", "png": :func:`camviz.figures.view` with the frame's image, class, threshold,
  units, opacity, colour map and toggles, written by :func:`camviz.figures.save` (vector PDF and
  SVG with real text, PNG at ``dpi``): matplotlib, no browser.
* "composite": a PNG made with PIL (:func:`camviz.export.compose_view`).
* "plotly" (an option, for plotly's look): the frame drawn by
  :func:`~camviz.widgets.figure.static_figure`, written by kaleido (needs a Chromium).

:class:`ExportBar` is the widget's *save as* row: saving runs in a worker thread
(:class:`~camviz.widgets.timing.Background`; a 300-dpi figure takes seconds), the status says
"saving..." meanwhile, then links to the saved file, or shows the error (a read-only folder, a
path under a file, an unknown suffix): never "saving..." for ever.

Example:
    >>> bar = ExportBar(lambda path, fmt: (lambda: path))
    >>> bar.name.value = "/tmp/camviz-doc-view"; bar.button.click(); "saved" in bar.status.value
    True
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go
from PIL import Image

from camviz import figures
from camviz.errors import CamvizError
from camviz.export import compose_view, save_image, write_figure
from camviz.widgets.figure import static_figure
from camviz.widgets.timing import Background
from camviz.widgets.view import Frame, ViewModel

__all__ = ["EXPORT_FORMATS", "LINK_BYTES", "Exports", "ExportBar", "target_path", "failure",
           "link", "writable_folder"]

EXPORT_FORMATS = [("paper figure: PDF", "pdf"), ("paper figure: SVG", "svg"),
                  ("paper figure: PNG", "png"), ("PNG composite (PIL)", "composite")]
#: Saved files up to this size are also linked as a download (a data URI in the page).
LINK_BYTES = 8 * 2**20
_RED = "#b00020"
Job = Callable[[], Path]


def target_path(name: str, fmt: str) -> Path:
    """The file a *save as* name gives for a format: the name's suffix, else the format's
    (``.png`` for the composite), relative names under the kernel's folder.

    Example:
        >>> target_path("out/view", "svg").name, target_path("fig.pdf", "pdf").name
        ('view.svg', 'fig.pdf')
    """
    p = Path(name.strip() or "camviz-view").expanduser()
    if not p.suffix:
        p = p.with_suffix(".png" if fmt in ("composite", "plotly") else f".{fmt}")
    return p


def failure(err: BaseException, path: Path) -> str:
    """What to tell the user when saving ``path`` failed (plain text).

    Example:
        >>> failure(PermissionError(13, "Permission denied"), Path("/ro/view.pdf"))
        'cannot write /ro/view.pdf: Permission denied; choose a folder you can write to'
    """
    if isinstance(err, CamvizError):
        return str(err)
    if isinstance(err, OSError):
        why = err.strerror or str(err)
        return f"cannot write {path}: {why}; choose a folder you can write to"
    return f"saving {path} failed: {type(err).__name__}: {err}"


def link(path: Path) -> str:
    """HTML for a saved file: its path, and a download link holding its bytes (files up to
    :data:`LINK_BYTES`), which works in JupyterLab, Notebook and Voila alike.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "v.svg"; _ = p.write_text("<svg/>")
        >>> 'download="v.svg"' in link(p)
        True
    """
    p = Path(path).resolve()
    shown = html.escape(str(p))
    size = p.stat().st_size
    if size > LINK_BYTES:
        return f"saved {shown} ({size / 2**20:.1f} MB)"
    mime = {".pdf": "application/pdf", ".svg": "image/svg+xml", ".png": "image/png"}.get(
        p.suffix.lower(), "application/octet-stream")
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    return (f'saved <a href="data:{mime};base64,{data}" download="{html.escape(p.name)}" '
            f'target="_blank" class="camviz-export-link">{html.escape(p.name)}</a> '
            f'<span style="font-size:11px;color:#666">{shown}</span>')


def _tagged(widget: W.Widget, css: str) -> W.Widget:
    widget.add_class(css)
    return widget


class ExportBar(W.HBox):
    """Name, format and Save button. ``prepare(path, format)`` snapshots what to save and
    returns the job that writes it (run off the kernel's thread); the status links the file.

    ``pending`` is the :class:`~concurrent.futures.Future` of the last save (done once the
    status shows its outcome).

    Example:
        >>> bar = ExportBar(lambda path, fmt: (lambda: path))
        >>> bar.format.value
        'pdf'
    """

    def __init__(self, prepare: Callable[[Path, str], Job]) -> None:
        self.prepare = prepare
        self.name = _tagged(W.Text(value="camviz-view", description="save as"),
                            "camviz-export-name")
        self.format = _tagged(W.Dropdown(options=EXPORT_FORMATS, value="pdf"),
                              "camviz-export-format")
        self.button = _tagged(W.Button(description="Save", icon="download"),
                              "camviz-export-btn")
        self.status = _tagged(W.HTML(value=""), "camviz-export-status")
        self.background = Background()
        self.pending: Future[None] | None = None
        self.button.on_click(lambda _b: self._clicked())
        super().__init__([self.name, self.format, self.button, self.status],
                         layout=W.Layout(flex_flow="row wrap", align_items="center"))

    def _clicked(self) -> None:
        fmt = self.format.value
        target = target_path(self.name.value, fmt)
        try:
            job = self.prepare(target, fmt)
        except CamvizError as err:
            self._done(None, err, target)
            return
        self.status.value = f"saving {html.escape(target.name)}..."
        self.button.disabled = True
        self.pending = self.background.submit(
            job, lambda out, err: self._done(out, err, target))

    def _done(self, out: Path | None, err: BaseException | None, target: Path) -> None:
        self.button.disabled = False
        if err is not None or out is None:
            why = failure(err or CamvizError("nothing was saved"), target)
            self.status.value = f'<span style="color:{_RED}">{html.escape(why)}</span>'
            return
        try:
            self.status.value = link(out)
        except OSError as e:  # saved, but gone or unreadable since
            self.status.value = html.escape(f"saved {out} ({e.strerror or e})")


def writable_folder(path: Path) -> None:
    """Raise :class:`CamvizError` early when ``path``'s folder cannot take a new file (it is a
    file, lies under one, or is not writable).

    Example:
        >>> writable_folder(Path("/tmp/view.pdf"))
    """
    folder = path.parent if str(path.parent) else Path(".")
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise CamvizError(f"cannot write {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise CamvizError(f"cannot write {path}: {parent} is read-only; choose a folder "
                                  "you can write to")
            return


class Exports:
    """The view of a :class:`~camviz.widgets.view.ViewModel` as files, from its frame and its
    cached result (never from a widget's synced state).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> from camviz.widgets.cache import ResultCache
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 3), device="cpu")
        >>> ex = Exports(ViewModel(ResultCache(net, torch.rand(1, 3, 8, 8)), units=2))
        >>> ex.composite().mode
        'RGB'
    """

    def __init__(self, view: ViewModel, size: int = 480) -> None:
        self.view, self.size = view, int(size)

    def frame(self) -> Frame:
        """The frame shown (CamvizError when the image failed to load)."""
        frame = self.view.frame
        if not isinstance(frame, Frame):
            raise CamvizError("nothing to export: the current image failed to load")
        return frame

    def to_figure(self) -> go.Figure:
        """The main view as a plotly figure (:func:`~camviz.widgets.figure.static_figure`)."""
        return static_figure(self.frame(), size=self.size)

    def paper_figure(self) -> Any:
        """The view as :func:`camviz.figures.view` draws it (matplotlib): the class map with its
        mask and box, and the unit tiles shown (a selected unit is always among them; the
        paper figure's main panel is the class's map)."""
        return self._paper()()

    def _paper(self) -> Callable[[], Any]:
        frame = self.frame()
        view = self.view.cache.get(frame.state.image)
        assert not isinstance(view, Exception)
        s, res = frame.state, view.res
        ids = [t.unit for t in frame.units]
        if s.unit is not None and s.unit not in ids:  # a unit selected by id: among the tiles
            ids.append(s.unit)
        kw = dict(units=ids, stats=self.view.stats,
                  order=s.unit_order, level=self.view.level, alpha=s.opacity, cmap=s.cmap,
                  box=s.show_box, mask=s.show_mask)

        def make() -> Any:
            fig = figures.view(res, s.cls, s.threshold, **kw)
            main = next(a for a in fig.axes if a.get_label() == "map")
            # named, so that a saved SVG can be checked against the view: the axes' background
            # spans the image exactly (imshow's extent), the box is drawn on it
            main.patch.set_gid("camviz-axes")
            if main.patches:
                main.patches[0].set_gid("camviz-box")
            return fig

        return make

    def composite(self, units: bool = True) -> Image.Image:
        """The view (and the unit tiles) as a PIL image; the mask is the shown map's above the
        mask's threshold on its colour scale (the threshold for a class map)."""
        frame = self.frame()
        s, tiles = frame.state, (frame.units if units else ())
        mark = frame.main.mark
        return compose_view(frame.image, frame.cam01, threshold=s.threshold if mark is None
                            else mark, opacity=s.opacity, cmap=s.cmap, show_mask=s.show_mask,
                            show_box=s.show_box, title=frame.caption,
                            tiles=[t.tile for t in tiles],
                            tile_labels=[f"u{t.unit}" for t in tiles])

    def job(self, path: Path, fmt: str | None = None, dpi: float = 300.0,
            scale: float = 2.0) -> Job:
        """What saving ``path`` as ``fmt`` (default: the suffix) writes, snapshotted now; the
        returned job does the writing and returns the path. "pdf", "svg", "png": the paper
        figure (PNG at ``dpi``); "composite": PIL; "plotly": kaleido (PNG at ``scale``)."""
        p = Path(path)
        fmt = (fmt or p.suffix.lstrip(".") or "pdf").lower()
        writable_folder(p)
        if fmt == "composite":
            image = self.composite()
            return lambda: save_image(image, p if p.suffix else p.with_suffix(".png"))
        if fmt == "plotly":
            fig = self.to_figure()
            return lambda: write_figure(fig, p if p.suffix else p.with_suffix(".png"),
                                        scale=scale)
        target = p if p.suffix else p.with_suffix(f".{fmt}")
        figures.figure_format(target)  # an unknown suffix fails now, not in the worker
        make = self._paper()
        return lambda: figures.save(make(), target, dpi=dpi)
