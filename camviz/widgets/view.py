"""The browser's view model: a state in (image, class, threshold, ...), a frame out.

A :class:`Frame` is everything the browser shows, as plain values: the image, the class map at
the input size in [0, 1], the heatmap as sent to the page, the mask (``camviz.localize.mask``)
with its outline, the box of its largest region (``camviz.localize.boxes``), the title, the
class's top units as tiles (ids, weights, shares of the logit, masks and their areas) and the
selected unit's detail. No ipywidgets and no plotly here: the FigureWidget, the unit panel, a
static figure and the PIL composite are all drawn from a frame.

Parts of a frame are recomputed only when what they depend on changes (a new opacity reuses the
map, mask, box and tiles of the frame before, as the same objects), and the network never runs
for a frame: results come from the :class:`~camviz.widgets.cache.ResultCache` (one forward pass
per image). Unit masks use the thresholds of the scan's statistics at one level (``level``,
None: the scan's own) for the tiles and the gallery alike; without statistics a unit's mask is
its map above the threshold times its maximum. The view model shows statistics, it never
computes them.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from camviz.gapnet import GapNet
    >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 3), device="cpu")
    >>> vm = ViewModel(ResultCache(net, torch.rand(2, 3, 8, 8)), units=2)
    >>> frame = vm.set(threshold=0.5)
    >>> frame.cam01.shape, frame.mask.shape, len(frame.units), vm.cache.forward_passes
    ((8, 8), (8, 8), 2, 1)
"""

from __future__ import annotations

import html
from collections.abc import Callable, Hashable
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from camviz.errors import CamvizError
from camviz.galleries import unit_gallery
from camviz.localize import PAPER_THRESHOLD
from camviz.localize import boxes as _boxes
from camviz.localize import mask as _mask
from camviz.maps import min_max
from camviz.render import COLORMAPS, outline, overlay
from camviz.units import threshold_masks
from camviz.unitstats import check_match
from camviz.widgets.cache import IMAGE_FAILURES, ImageResult, ResultCache
from camviz.widgets.drawing import display_map, mask_outline, torch_threads

__all__ = ["UNIT_ORDERS", "ViewState", "UnitTile", "UnitDetail", "Frame", "ErrorFrame",
           "ViewModel", "unit_tiles"]

UNIT_ORDERS = ("weight", "contribution")
TILE_COLOR = (255, 255, 255)


class Stats(Protocol):
    """What the view model reads of a :class:`~camviz.scan.UnitStats` (it computes nothing)."""

    level: float

    @property
    def num_units(self) -> int: ...

    def thresholds(self, level: float | None = None) -> torch.Tensor: ...

    def top_images(self, unit: int, n: int | None = None) -> tuple[torch.Tensor, ...]: ...


@dataclass(frozen=True)
class ViewState:
    """What the user chose. ``cls`` None: the image's top-1 class; ``unit``: the selected unit.

    Example:
        >>> ViewState(threshold=0.5).cmap
        'jet'
    """

    image: int = 0
    cls: int | None = None
    threshold: float = PAPER_THRESHOLD
    opacity: float = 0.5
    cmap: str = "jet"
    show_box: bool = True
    show_mask: bool = True
    unit_order: str = "weight"
    unit: int | None = None

    def __post_init__(self) -> None:
        if self.cmap not in COLORMAPS:
            raise CamvizError(f"unknown colour map {self.cmap!r}; choose one of {COLORMAPS}")
        if self.unit_order not in UNIT_ORDERS:
            raise CamvizError(
                f"unit_order must be 'weight' or 'contribution', not {self.unit_order!r}")


@dataclass(frozen=True, eq=False)
class UnitTile:
    """One of the class's top units on the image: its map over the thumbnail, mask outlined."""

    unit: int
    weight: float  # w_ck
    share: float  # w_ck mean(f_k) / (logit - bias)
    area: float  # fraction of the image inside its mask
    mask: np.ndarray  # bool (th, tw)
    tile: np.ndarray  # uint8 (th, tw, 3)


@dataclass(frozen=True, eq=False)
class UnitDetail:
    """The selected unit: its numbers on this image, and its top dataset images when known.

    ``top``: (dataset index, spatial max) of its top images, None without statistics;
    ``gallery``: those images with its mask (needs the dataset), or why it failed in ``error``.
    """

    unit: int
    weight: float
    pooled: float
    contribution: float
    share: float
    top: tuple[tuple[int, float], ...] | None = None
    gallery: np.ndarray | None = None
    error: str | None = None


def _values(state: ViewState, class_name: str | None, units: list[int]) -> dict[str, Any]:
    return {
        "image": state.image, "class": state.cls, "class_name": class_name,
        "threshold": float(state.threshold), "opacity": float(state.opacity),
        "cmap": state.cmap, "box": bool(state.show_box), "mask": bool(state.show_mask),
        "unit_order": state.unit_order, "units": units, "unit": state.unit,
    }


@dataclass(frozen=True, eq=False)
class Frame:
    """Everything the browser shows for one state (see the module doc)."""

    state: ViewState  # with ``cls`` resolved
    class_name: str
    prob: float
    class_options: tuple[tuple[str, int], ...]  # the class dropdown: top-k (+ the shown one)
    image: np.ndarray  # uint8 (H, W, 3), the network input
    source: str  # the image as a data URI
    cam01: np.ndarray  # float32 (H, W) in [0, 1]
    heat: np.ndarray  # the map as drawn: block means (drawing.display_map) ...
    heat_step: int  # ... of heat_step x heat_step pixels
    mask: np.ndarray  # bool (H, W): cam01 > threshold * max
    outline: tuple[np.ndarray, np.ndarray]  # the mask's boundary (x, y), NaN between pieces
    box: np.ndarray | None  # inclusive (x0, y0, x1, y1) of the largest region, None if empty
    units: tuple[UnitTile, ...]
    dataset_masks: bool  # unit masks at dataset quantiles (True) or at the threshold
    detail: UnitDetail | None

    @property
    def title(self) -> str:
        """The figure's title (HTML, the class name escaped)."""
        return (f"<b>{html.escape(self.class_name)}</b>  p={self.prob:.1%}  "
                f"threshold {self.state.threshold:.2f}")

    @property
    def caption(self) -> str:
        """A plain-text title for pictures (the PIL composite)."""
        return f"{self.class_name} p={self.prob:.1%} t={self.state.threshold:.2f}"

    def values(self) -> dict[str, Any]:
        """The state as plain values, with the class name and the unit ids shown."""
        return _values(self.state, self.class_name, [t.unit for t in self.units])


@dataclass(frozen=True, eq=False)
class ErrorFrame:
    """An image that could not be shown: the reason instead of a view."""

    state: ViewState  # cls and unit None
    label: str
    error: Exception

    @property
    def message(self) -> str:
        return f"could not show {self.label}: {self.error}"

    def values(self) -> dict[str, Any]:
        return _values(self.state, None, [])


def unit_tiles(
    res: Any, ids: torch.Tensor, thumb: np.ndarray, cmap: str,
    thresholds: torch.Tensor | None, threshold: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(tile, mask) of each unit ``ids`` of a one-image result, drawn on ``thumb``.

    A tile is the unit's raw map ``f_k`` upsampled bilinearly to the thumbnail, min-max
    normalised, over the thumbnail (alpha 0.5), with its mask outlined. The mask is
    ``f_k > T_k`` (``camviz.units.threshold_masks``) given per-unit ``thresholds`` (K,), else
    ``f_k > threshold * max f_k``.

    Example:
        >>> from camviz.result import CamResult
        >>> res = CamResult(torch.zeros(1, 2), torch.rand(1, 3, 2, 2), torch.zeros(2, 3),
        ...                 torch.zeros(2), "avg", ["a", "b"])
        >>> tile, m = unit_tiles(res, torch.tensor([1]), np.zeros((4, 4, 3), np.uint8),
        ...                      "jet", None, 0.5)[0]
        >>> tile.shape, m.shape
        ((4, 4, 3), (4, 4))
    """
    th, tw = thumb.shape[:2]
    raw = res.unit_maps(ids)  # (1, n, h, w)
    up = F.interpolate(raw, size=(th, tw), mode="bilinear", align_corners=False)
    if thresholds is not None:
        masks = threshold_masks(raw, thresholds[ids.to(thresholds.device)], size=(th, tw))[0]
    else:
        masks = _mask(up[0], float(threshold))
    maps01 = min_max(up[0]).cpu().numpy()
    masks_np = masks.cpu().numpy()
    return [(outline(overlay(thumb, maps01[j], alpha=0.5, cmap=cmap), masks_np[j],
                     color=TILE_COLOR), masks_np[j]) for j in range(maps01.shape[0])]


class _Memo:
    """The last value made, kept while its key stays the same."""

    def __init__(self) -> None:
        self.key: Hashable = object()
        self.value: Any = None

    def __call__(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key != self.key:
            self.value, self.key = make(), key
        return self.value


class ViewModel:
    """State in, :class:`Frame` out, for the images of ``cache`` (see the module doc).

    ``stats``/``dataset``: the UnitStats of a scan of this network and the dataset scanned
    (unit masks at dataset thresholds, the units' top images); ``level``: the quantile level of
    those thresholds (None: the scan's own); ``k``: top classes listed; ``units``: unit tiles;
    ``gallery``: top dataset images of a selected unit.

    Example:
        >>> from torch import nn
        >>> from camviz.gapnet import GapNet
        >>> net = GapNet(nn.Conv2d(3, 4, 1), nn.Linear(4, 3), classes=list("abc"), device="cpu")
        >>> vm = ViewModel(ResultCache(net, torch.rand(1, 3, 8, 8)))
        >>> vm.set(cls="b").class_name, vm.set(opacity=0.2).state.cls
        ('b', 1)
    """

    def __init__(
        self, cache: ResultCache, stats: Stats | None = None, *, dataset: Any = None,
        k: int = 5, units: int = 6, gallery: int = 6, level: float | None = None,
        state: ViewState | None = None,
    ) -> None:
        net = cache.net
        if stats is not None:
            check_match(stats, net)  # another network's statistics are refused
        self.cache, self.stats, self.dataset = cache, stats, dataset
        self.k, self.n_units, self.gallery_n, self.level = int(k), int(units), int(gallery), level
        self.classes = list(net.classes)
        self._state = state or ViewState()
        self._frame: Frame | ErrorFrame | None = None
        self._thresholds: torch.Tensor | None = None
        self._galleries: dict[int, np.ndarray] = {}
        self._memo = {name: _Memo() for name in ("map", "regions", "tiles", "options", "detail")}

    @property
    def state(self) -> ViewState:
        """The current state (``cls`` resolved once a frame was made)."""
        return self._state

    @property
    def frame(self) -> Frame | ErrorFrame:
        """The frame of the current state (made on first use)."""
        if self._frame is None:
            self._frame = self._make(self._state)
            self._state = self._frame.state
        return self._frame

    def set(self, **changes: Any) -> Frame | ErrorFrame:
        """Change fields of the state (``ViewState``'s names; ``cls`` also by name); the frame.

        A new image shows its top-1 class unless ``cls`` is given; a new image or class
        deselects the unit unless ``unit`` is given.
        """
        unknown = set(changes) - {f.name for f in fields(ViewState)}
        if unknown:
            raise CamvizError(f"no such view setting: {sorted(unknown)}")
        if changes.get("cls") is not None:
            changes["cls"] = self.class_of(changes["cls"])
        if changes.get("unit") is not None:
            changes["unit"] = self._unit_of(changes["unit"])
        if "image" in changes:
            changes.setdefault("cls", None)
        if "cls" in changes:
            changes.setdefault("unit", None)
        self._state = replace(self._state, **changes)
        self._frame = None
        return self.frame

    def class_of(self, cls: int | str) -> int:
        """A class index from an index or a name, checked."""
        if isinstance(cls, str):
            if cls not in self.classes:
                raise CamvizError(f"unknown class {cls!r}; see the net's classes "
                                  f"(e.g. {self.classes[:5]})")
            return self.classes.index(cls)
        c = int(cls)
        if not 0 <= c < len(self.classes):
            raise CamvizError(f"class index {c} out of range 0..{len(self.classes) - 1}")
        return c

    def _unit_of(self, unit: int) -> int:
        u, n = int(unit), self.cache.net.num_units
        if not 0 <= u < n:
            raise CamvizError(f"unit {u} out of range 0..{n - 1}")
        return u

    def unit_thresholds(self) -> torch.Tensor | None:
        """The units' mask thresholds (K,): the stats' quantiles at ``level``; None without."""
        if self.stats is None:
            return None
        if self._thresholds is None:
            self._thresholds = self.stats.thresholds(self.level)
        return self._thresholds

    # ------------------------------------------------------------------ making a frame

    def _make(self, state: ViewState) -> Frame | ErrorFrame:
        view = self.cache.get(state.image)
        if isinstance(view, Exception):
            label = self.cache.labels[state.image]
            return ErrorFrame(replace(state, cls=None, unit=None), label, view)
        if state.cls is None:
            state = replace(state, cls=self._topk(view)[0])
        c, t, m = state.cls, float(state.threshold), self._memo
        assert c is not None
        with torch_threads(1):
            cam01, heat, step = m["map"]((view, c), lambda: self._class_map(view, c))
            fg, line, box = m["regions"]((view, c, t), lambda: self._regions(cam01, t))
            t_tiles = t if self.stats is None else None  # dataset masks ignore the slider
            key = (view, c, state.unit_order, state.cmap, t_tiles)
            tiles = m["tiles"](key, lambda: self._tiles(view, state))
            options = m["options"]((view, c), lambda: self._class_options(view, c))
        detail = m["detail"]((view, c, state.unit), lambda: self._detail(view, c, state.unit))
        return Frame(
            state=state, class_name=self.classes[c], prob=float(view.probs[c]),
            class_options=options, image=view.image, source=view.source, cam01=cam01,
            heat=heat, heat_step=step, mask=fg, outline=line, box=box, units=tiles,
            dataset_masks=self.stats is not None, detail=detail)

    def _topk(self, view: ImageResult) -> list[int]:
        top = view.probs.topk(min(self.k, view.probs.shape[0]))
        return [int(c) for c in top.indices.tolist()]

    def _class_options(self, view: ImageResult, current: int) -> tuple[tuple[str, int], ...]:
        probs, top = view.probs, self._topk(view)
        opts = [(f"{self.classes[c]}  {float(probs[c]):.1%}", c) for c in top]
        if current not in top:
            opts.append((f"{self.classes[current]}  {float(probs[current]):.1%} "
                         f"(not in top {len(top)})", current))
        return tuple(opts)

    @staticmethod
    def _class_map(view: ImageResult, c: int) -> tuple[np.ndarray, np.ndarray, int]:
        cam01 = view.res.cams(c, size="input", normalize=True)[0, 0].float().cpu().numpy()
        heat, step = display_map(cam01)
        return cam01, heat, step

    @staticmethod
    def _regions(cam01: np.ndarray, t: float) -> tuple[np.ndarray, Any, np.ndarray | None]:
        fg, bb = _mask(cam01, t), _boxes(cam01, t)
        return fg, mask_outline(fg), (bb[0] if len(bb) else None)

    def _tiles(self, view: ImageResult, state: ViewState) -> tuple[UnitTile, ...]:
        if self.n_units == 0:
            return ()
        u = view.res.units(state.cls, k=self.n_units, order=state.unit_order)
        ids = u.ids[0]
        drawn = unit_tiles(view.res, ids, view.thumb, state.cmap, self.unit_thresholds(),
                           state.threshold)
        return tuple(
            UnitTile(unit=int(i), weight=float(w), share=float(s), area=float(m.mean()),
                     mask=m, tile=tile)
            for i, w, s, (tile, m) in zip(ids.tolist(), u.weights[0].tolist(),
                                          u.share[0].tolist(), drawn, strict=True))

    def _detail(self, view: ImageResult, c: int, unit: int | None) -> UnitDetail | None:
        if unit is None:
            return None
        res = view.res
        with torch_threads(1):
            w = float(res.weight[c, unit])
            pooled = float(res.pooled()[0, unit])
            total = float(res.units(c, k=1).total[0])
        share = w * pooled / total if total else float("nan")
        detail = UnitDetail(unit, w, pooled, w * pooled, share)
        if self.stats is None:
            return detail
        idx, val = self.stats.top_images(unit, self.gallery_n)
        top = tuple((int(i), float(v)) for i, v in zip(idx, val, strict=True))
        if self.dataset is None:
            return replace(detail, top=top)
        try:
            return replace(detail, top=top, gallery=self._gallery(unit))
        except IMAGE_FAILURES as err:
            return replace(detail, top=top, error=str(err))

    def _gallery(self, unit: int) -> np.ndarray:
        """The unit's top dataset images with its masks: one pass on them, the first time."""
        if unit not in self._galleries:
            assert self.stats is not None
            panel = unit_gallery(self.cache.net, self.dataset, self.stats, unit,  # type: ignore[arg-type]
                                 n=self.gallery_n, level=self.level)
            self._galleries[unit] = np.asarray(panel)
        return self._galleries[unit]
