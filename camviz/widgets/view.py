"""The browser's view model: a state in (image, class, threshold, unit, ...), a frame out.

A :class:`Frame` is everything the browser shows, as plain values: the image, the map on the
main view at the input size in [0, 1] (the class map; or the selected unit's map ``f_k``), the
heatmap as sent to the page, the mask (``camviz.localize.mask``, or the unit's mask) with its
outline, the box of its largest region (``camviz.localize.boxes``), what the colour means and
where the threshold lies on it, the title, the class's top units as tiles (ids, weights, shares
of the logit, masks and their areas) and the selected unit's detail. No ipywidgets and no
plotly here: the FigureWidget, the unit panel, a static figure, the paper figure and the PIL
composite are all drawn from a frame (or its state).

Parts of a frame are recomputed only when what they depend on changes (a new opacity reuses the
map, mask, box and tiles of the frame before, as the same objects), and the network never runs
for a frame: results come from the :class:`~camviz.widgets.cache.ResultCache` (one forward pass
per image). Unit masks use the thresholds of the scan's statistics at one level (``level``,
None: the scan's own) for the tiles, the main view and the gallery alike; without statistics a
unit's mask is its map above the threshold times its maximum. The view model shows statistics,
it never computes them.

Units are ranked by their contribution on this image by default (``unit_order``): on a network
of many units the units of largest weight ``w_ck`` are often silent on the image (their share of
the logit is 0), while the contributions ``w_ck mean f_k`` are what this image's logit is made
of (they sum to logit - bias). The ranking by weight is the class's, the same on every image.

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
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import numpy as np
import torch

from camviz.errors import CamvizError
from camviz.hooks import torch_threads
from camviz.localize import PAPER_THRESHOLD
from camviz.localize import boxes as _boxes
from camviz.localize import mask as _mask
from camviz.render import COLORMAPS
from camviz.unitstats import check_match
from camviz.widgets.cache import ImageResult, ResultCache
from camviz.widgets.drawing import display_map, mask_outline
from camviz.widgets.tiles import (
    GALLERY_FAILURES,
    UnitDetail,
    UnitTile,
    outlined,
    tile_pictures,
    top_image_panel,
    unit_map,
    unit_tiles,
)

__all__ = ["UNIT_ORDERS", "DEFAULT_UNIT_ORDER", "CAM_LABEL", "UNIT_LABEL", "ViewState",
           "UnitTile", "UnitDetail", "Frame", "ErrorFrame", "ViewModel", "unit_tiles",
           "find_classes"]

UNIT_ORDERS = ("weight", "contribution")
#: Units by contribution on this image by default (see the module doc for why).
DEFAULT_UNIT_ORDER = "contribution"
CAM_LABEL = "normalised CAM"
UNIT_LABEL = "unit activation"


class Stats(Protocol):
    """What the view model reads of a :class:`~camviz.scan.UnitStats` (it computes nothing)."""

    level: float

    @property
    def num_units(self) -> int: ...

    def thresholds(self, level: float | None = None) -> torch.Tensor: ...

    def top_images(self, unit: int, n: int | None = None) -> tuple[torch.Tensor, ...]: ...


@dataclass(frozen=True)
class ViewState:
    """What the user chose. ``cls`` None: the image's top-1 class; ``unit``: the selected unit
    (its map is then on the main view).

    Example:
        >>> ViewState(threshold=0.5).cmap, ViewState().unit_order
        ('jet', 'contribution')
    """

    image: int = 0
    cls: int | None = None
    threshold: float = PAPER_THRESHOLD
    opacity: float = 0.5
    cmap: str = "jet"
    show_box: bool = True
    show_mask: bool = True
    unit_order: str = DEFAULT_UNIT_ORDER
    unit: int | None = None

    def __post_init__(self) -> None:
        if self.cmap not in COLORMAPS:
            raise CamvizError(f"unknown colour map {self.cmap!r}; choose one of {COLORMAPS}")
        if self.unit_order not in UNIT_ORDERS:
            raise CamvizError(
                f"unit_order must be 'weight' or 'contribution', not {self.unit_order!r}")


def _values(state: ViewState, class_name: str | None, units: list[int],
            size: tuple[int, int] | None = None) -> dict[str, Any]:
    return {
        "image": state.image, "class": state.cls, "class_name": class_name,
        "threshold": float(state.threshold), "opacity": float(state.opacity),
        "cmap": state.cmap, "box": bool(state.show_box), "mask": bool(state.show_mask),
        "unit_order": state.unit_order, "units": units, "unit": state.unit,
        "shown": "class" if state.unit is None else "unit",
        "image_size": None if size is None else [int(size[0]), int(size[1])],
    }


@dataclass(frozen=True, eq=False)
class MainMap:
    """What the main view draws: a map in [0, 1] with its mask, outline and box."""

    map01: np.ndarray  # float32 (H, W) in [0, 1]
    heat: np.ndarray  # the map as drawn: block means (drawing.display_map) ...
    heat_step: int  # ... of heat_step x heat_step pixels
    mask: np.ndarray  # bool (H, W)
    outline: tuple[np.ndarray, np.ndarray]  # the mask's boundary (x, y), NaN between pieces
    box: np.ndarray | None  # inclusive (x0, y0, x1, y1) of the largest region, None if empty
    label: str  # what the colour means
    mark: float | None  # the mask's threshold on the 0..1 colour scale, None off the scale


@dataclass(frozen=True, eq=False)
class Frame:
    """Everything the browser shows for one state (see the module doc)."""

    state: ViewState  # with ``cls`` resolved
    class_name: str
    prob: float
    class_options: tuple[tuple[str, int], ...]  # the class dropdown: top-k (+ the shown one)
    image: np.ndarray  # uint8 (H, W, 3), the network input
    source: str  # the image as a data URI
    main: MainMap  # the class map, or the selected unit's
    units: tuple[UnitTile, ...]
    dataset_masks: bool  # unit masks at dataset quantiles (True) or at the threshold
    detail: UnitDetail | None

    @property
    def cam01(self) -> np.ndarray:
        """The map on the main view in [0, 1] (the class's CAM unless a unit is selected)."""
        return self.main.map01

    @property
    def heat(self) -> np.ndarray:
        return self.main.heat

    @property
    def heat_step(self) -> int:
        return self.main.heat_step

    @property
    def mask(self) -> np.ndarray:
        return self.main.mask

    @property
    def outline(self) -> tuple[np.ndarray, np.ndarray]:
        return self.main.outline

    @property
    def box(self) -> np.ndarray | None:
        return self.main.box

    @property
    def title(self) -> str:
        """The figure's title (HTML, the class name escaped)."""
        name, s = html.escape(self.class_name), self.state
        head = f"<b>{name}</b>  p={self.prob:.1%}"
        if s.unit is not None:
            rule = "dataset quantile" if self.dataset_masks else f"threshold {s.threshold:.2f}"
            return f"<b>unit {s.unit}</b> of {head}  mask: {rule}"
        return f"{head}  threshold {s.threshold:.2f}"

    @property
    def caption(self) -> str:
        """A plain-text title for pictures (the PIL composite)."""
        return f"{self.class_name} p={self.prob:.1%} t={self.state.threshold:.2f}"

    def values(self) -> dict[str, Any]:
        """The state as plain values, with the class name and the unit ids shown."""
        return _values(self.state, self.class_name, [t.unit for t in self.units],
                       self.image.shape[:2])


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


def find_classes(classes: Sequence[str], text: str, limit: int = 8) -> list[int]:
    """Classes whose name contains ``text``, case-insensitively: the exact name first, then
    names that start with it, then names with a word that starts with it, then the rest (each
    group in class order); at most ``limit``.

    Example:
        >>> find_classes(["Tabby cat", "tiger", "cat", "bobcat", "cattle"], "CAT")
        [2, 4, 0, 3]
    """
    q = " ".join(str(text).split()).casefold()
    if not q:
        return []

    def rank(name: str) -> int | None:
        n = name.casefold()
        if q not in n:
            return None
        if n == q:
            return 0
        if n.startswith(q):
            return 1
        return 2 if any(w.startswith(q) for w in n.replace("-", " ").split()) else 3

    ranked = [(r, i) for i, name in enumerate(classes) if (r := rank(name)) is not None]
    return [i for _, i in sorted(ranked)[: max(0, int(limit))]]


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
        self._galleries: dict[int, np.ndarray | str] = {}
        self._memo = {name: _Memo() for name in ("map", "main", "ranked", "tiles", "options",
                                                  "detail")}

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
        c, t, u, m = state.cls, float(state.threshold), state.unit, self._memo
        assert c is not None
        t_units = t if self.stats is None else None  # dataset masks ignore the slider
        with torch_threads(1):
            cam01, heat, step = m["map"]((view, c), lambda: _class_map(view, c))
            if u is None:
                main = m["main"]((view, c, t), lambda: _main(cam01, heat, step,
                                                             _mask(cam01, t), CAM_LABEL, t))
            else:
                main = m["main"]((view, "unit", u, t_units), lambda: self._unit_main(view, u, t))
            key = (view, c, state.unit_order, state.cmap, t_units)
            tiles = m["tiles"](key, lambda: self._tiles(view, state))
            options = m["options"]((view, c), lambda: self._class_options(view, c))
        detail = m["detail"]((view, c, u), lambda: self._detail(view, c, u))
        return Frame(
            state=state, class_name=self.classes[c], prob=float(view.probs[c]),
            class_options=options, image=view.image, source=view.source, main=main,
            units=tiles, dataset_masks=self.stats is not None, detail=detail)

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

    def _unit_main(self, view: ImageResult, unit: int, t: float) -> MainMap:
        map01, fg, mark = unit_map(view.res, unit, self.unit_thresholds(), t)
        heat, step = display_map(map01)
        return _main(map01, heat, step, fg, UNIT_LABEL, mark)

    def _tiles(self, view: ImageResult, state: ViewState) -> tuple[UnitTile, ...]:
        if self.n_units == 0:
            return ()
        # the ranking and the pictures do not depend on the threshold: a drag redraws masks only
        u, pics = self._memo["ranked"](
            (view, state.cls, state.unit_order, state.cmap), lambda: self._ranked(view, state))
        ids = u.ids[0]
        drawn = outlined(view.res, ids, pics, self.unit_thresholds(), state.threshold)
        return tuple(
            UnitTile(unit=int(i), weight=float(w), share=float(s), area=float(m.mean()),
                     mask=m, tile=tile)
            for i, w, s, (tile, m) in zip(ids.tolist(), u.weights[0].tolist(),
                                          u.share[0].tolist(), drawn, strict=True))

    def _ranked(self, view: ImageResult, state: ViewState) -> tuple[Any, Any]:
        u = view.res.units(state.cls, k=self.n_units, order=state.unit_order)
        return u, tile_pictures(view.res, u.ids[0], view.thumb, state.cmap)

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
        panel = self._gallery(unit)
        if isinstance(panel, str):
            return replace(detail, top=top, error=panel)
        return replace(detail, top=top, gallery=panel)

    def _gallery(self, unit: int) -> np.ndarray | str:
        """The unit's top dataset images with its masks (one pass on them, the first time), or
        why they cannot be shown (kept too: a wrong dataset stays wrong)."""
        if unit not in self._galleries:
            try:
                self._galleries[unit] = top_image_panel(self.cache.net, self.dataset, self.stats,
                                                        unit, self.gallery_n, self.level)
            except GALLERY_FAILURES as err:
                self._galleries[unit] = f"cannot show the top dataset images: {err}"
        return self._galleries[unit]


def _class_map(view: ImageResult, c: int) -> tuple[np.ndarray, np.ndarray, int]:
    cam01 = view.res.cams(c, size="input", normalize=True)[0, 0].float().cpu().numpy()
    heat, step = display_map(cam01)
    return cam01, heat, step


def _main(map01: np.ndarray, heat: np.ndarray, step: int, fg: np.ndarray, label: str,
          mark: float | None) -> MainMap:
    """A main map: its mask's outline, and the box of its largest region."""
    if fg.dtype != bool:
        fg = np.asarray(fg, dtype=bool)
    bb = _boxes(fg.astype(np.float32), 0.5) if fg.any() else np.zeros((0, 4), np.int64)
    return MainMap(map01, heat, step, fg, mask_outline(fg), bb[0] if len(bb) else None,
                   label, mark)
