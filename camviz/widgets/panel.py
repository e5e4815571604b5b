"""The unit panel of the browser: header, ranking toggle, unit cards, detail and gallery.

It draws what a :class:`~camviz.widgets.view.Frame` says (the tiles, ids, weights, shares and
mask areas of the class's top units; the selected unit's numbers and gallery) and reports a
click on a card (its picture or its button) to ``on_select`` with the unit's id, and
"class map" with None. Every number carries a tooltip saying what it is; small shares read
"<1%", not "0%". The panel never widens the main view: it takes the room left of the row and
its gallery scales to that width (or wraps under the view on a narrow page).

Example:
    >>> share_text(0.004), share_text(-0.25), share_text(0.0), area_text(0.0)
    ('<1%', '-25%', '0%', 'empty')
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

import ipywidgets as W

from camviz.widgets.drawing import TILE, jpeg, png
from camviz.widgets.view import UNIT_ORDERS, ErrorFrame, Frame, UnitDetail, UnitTile

__all__ = ["UnitPanel", "share_text", "area_text", "TIPS"]

_RED = "#b00020"
_SELECTED = "2px solid #1a73e8"
#: What each number of a card means (the tooltips).
TIPS = {
    "unit": "unit k: channel k of the last conv layer; click the picture to show its map",
    "weight": "w_ck: the head's weight of this unit for the class (the same on every image)",
    "share": "contribution w_ck x mean f_k as a share of logit - bias on this image "
             "(over all units the shares sum to 100%)",
    "area": "share of the image inside the unit's mask (outlined)",
}


def share_text(share: float) -> str:
    """A share of the logit in percent: ``<1%`` below one percent (never a misleading ``0%``
    for a unit that does contribute), ``0%`` only when it is exactly zero.

    Example:
        >>> share_text(0.123), share_text(-0.003), share_text(float("nan"))
        ('+12%', '-<1%', 'n/a')
    """
    if not math.isfinite(share):
        return "n/a"
    if share == 0:
        return "0%"
    if abs(share) < 0.01:
        return "<1%" if share > 0 else "-<1%"
    return f"{share:+.0%}"


def area_text(area: float) -> str:
    """A mask's area in percent of the image: ``empty``, ``<1%`` or ``12%``.

    Example:
        >>> area_text(0.002), area_text(0.5)
        ('<1%', '50%')
    """
    if area <= 0:
        return "empty"
    return "<1%" if area < 0.01 else f"{area:.0%}"


def _tip(key: str, text: str) -> str:
    return f'<span title="{html.escape(TIPS[key])}">{text}</span>'


def _label(tile: UnitTile) -> str:
    return ('<div style="font-size:11px;line-height:1.25">'
            f"{_tip('unit', f'unit <b>{tile.unit}</b>')}<br>"
            f"{_tip('weight', f'w {tile.weight:+.3g}')}<br>"
            f"{_tip('share', f'{share_text(tile.share)} of logit')}<br>"
            f"{_tip('area', f'mask {area_text(tile.area)}')}</div>")


def _header(frame: Frame) -> str:
    name = html.escape(frame.class_name)
    if frame.state.unit_order == "contribution":
        how = ("by contribution on this image (the default: what this image's logit is made "
               "of; by weight, the class's strongest units are often silent on an image)")
    else:
        how = "by weight w_ck (the class's ranking, the same on every image)"
    rule = ("masks: unit map above its dataset quantile" if frame.dataset_masks
            else "masks: unit map above threshold x its max (pass stats= for dataset "
            "thresholds)")
    return (f'<div style="line-height:1.35"><b>Top units of {name}</b> {html.escape(how)}<br>'
            f'<span style="font-size:11px">w: weight; % of logit: contribution / (logit - '
            f"bias); mask: area. Click a picture to see the unit on the main view. "
            f"{html.escape(rule)}</span></div>")


def _detail(frame: Frame, d: UnitDetail) -> str:
    name = html.escape(frame.class_name)
    head = (f"<b>unit {d.unit}</b> for <b>{name}</b> (on the main view): weight "
            f"{d.weight:+.4g}, pooled activation {d.pooled:.4g}, contribution "
            f"{d.contribution:+.4g} ({share_text(d.share)} of logit - bias)")
    if d.top is None:
        return head + ("<br><i>Give stats=camviz.scan(net, dataset) and dataset= to see this "
                       "unit's top dataset images with their masks.</i>")
    if d.error is not None:
        return head + f'<br><span style="color:{_RED}">{html.escape(d.error)}</span>'
    if d.gallery is None:
        rows = ", ".join(f"#{i} ({v:.3g})" for i, v in d.top)
        return head + (f"<br>top dataset images (index, max): {html.escape(rows)}<br><i>Give "
                       "dataset= (the scanned dataset) to see them with their masks.</i>")
    return head + f"<br>its top {len(d.top)} dataset images, masked at its dataset quantile:"


class _Card(W.VBox):
    """A unit's card: its picture (clickable: a transparent button lies over it), its numbers
    and a button."""

    def __init__(self, on_click: Callable[[], None]) -> None:
        side = f"{TILE}px"
        self.image = W.Image(format="jpeg", width=TILE, height=TILE,
                             layout=W.Layout(grid_area="tile", width=side, height=side,
                                             object_fit="contain"))
        self.image.add_class("camviz-unit-image")
        self.pick = W.Button(description="", tooltip="show this unit on the main view",
                             layout=W.Layout(grid_area="tile", width=side, height=side,
                                             margin="0", padding="0"),
                             style=W.ButtonStyle(button_color="transparent"))
        self.pick.add_class("camviz-unit-pick")
        picture = W.GridBox([self.image, self.pick], layout=W.Layout(
            grid_template_areas='"tile"', grid_template_columns=side,
            grid_template_rows=side, width=side, height=side))
        self.label = W.HTML(value="").add_class("camviz-unit-label")
        self.button = W.Button(description="show", layout=W.Layout(width=side))
        self.button.add_class("camviz-unit-btn")
        for b in (self.pick, self.button):
            b.on_click(lambda _b: on_click())
        super().__init__([picture, self.label, self.button],
                         layout=W.Layout(align_items="flex-start", margin="2px", padding="2px",
                                         border="2px solid transparent"))
        self.add_class("camviz-unit-card")

    def show(self, tile: UnitTile | None) -> None:
        if tile is None:
            self.layout.display = "none"
            return
        self.image.value = jpeg(tile.tile)
        self.label.value = _label(tile)
        self.button.description = f"unit {tile.unit}"
        self.layout.display = None


class UnitPanel(W.VBox):
    """Header, ranking toggle (``order``), ``units`` cards, detail, "class map" button and
    gallery; each carries a ``camviz-unit-*`` CSS class."""

    def __init__(self, units: int, on_select: Callable[[int | None], None],
                 order: str = "contribution") -> None:
        self.on_select = on_select
        self.header = W.HTML(value="").add_class("camviz-unit-header")
        self.order = W.ToggleButtons(
            options=[(f"by {o}", o) for o in sorted(UNIT_ORDERS)], value=order,
            tooltips=["contribution w_ck x mean f_k on this image (default)",
                      "head weight w_ck (the class's ranking)"])
        self.order.add_class("camviz-unit-order")
        self.boxes = [_Card(lambda j=j: self._clicked(j)) for j in range(int(units))]
        self.cards = [(c.image, c.label, c.button) for c in self.boxes]
        self.detail = W.HTML(value="").add_class("camviz-unit-detail")
        self.back = W.Button(description="class map", icon="undo",
                             tooltip="show the class map on the main view again",
                             layout=W.Layout(display="none"))
        self.back.add_class("camviz-unit-back")
        self.back.on_click(lambda _b: self.on_select(None))
        self.gallery = W.Image(format="png", layout=W.Layout(
            display="none", max_width="100%", height="auto", object_fit="contain"))
        self.gallery.add_class("camviz-unit-gallery")
        grid = W.GridBox(self.boxes, layout=W.Layout(
            grid_template_columns=f"repeat(auto-fill, {TILE + 12}px)", width="100%"))
        super().__init__([self.header, self.order, grid, self.back, self.detail, self.gallery],
                         layout=W.Layout(align_items="flex-start", margin="0 0 0 12px",
                                         flex="1 1 320px", min_width="0", overflow="hidden"))
        self.add_class("camviz-units")
        self._units: tuple[UnitTile, ...] = ()
        self._detail: UnitDetail | None = None

    def _clicked(self, j: int) -> None:
        if j < len(self._units):
            self.on_select(self._units[j].unit)

    def show(self, frame: Frame | ErrorFrame) -> None:
        """Draw the frame's units and selected unit (an error frame hides the panel: the
        browser shows the one message)."""
        if isinstance(frame, ErrorFrame):
            self.layout.display = "none"
            self._set_cards(())
            self._set_detail("", None)
            return
        self.layout.display = None
        if frame.units is not self._units:
            self._set_cards(frame.units)
        self.header.value = _header(frame) if self.boxes else ""
        for card, tile in zip(self.boxes, frame.units, strict=False):
            card.layout.border = _SELECTED if tile.unit == frame.state.unit else (
                "2px solid transparent")
        self.back.layout.display = None if frame.state.unit is not None else "none"
        if frame.detail is None:
            self._set_detail("", None)
        elif frame.detail is not self._detail:
            self._set_detail(_detail(frame, frame.detail), frame.detail)

    def _set_cards(self, tiles: tuple[UnitTile, ...]) -> None:
        self._units = tiles
        for j, card in enumerate(self.boxes):
            card.show(tiles[j] if j < len(tiles) else None)

    def _set_detail(self, text: str, detail: UnitDetail | None) -> None:
        self._detail = detail
        self.detail.value = f'<div style="line-height:1.35">{text}</div>' if text else ""
        if detail is None or detail.gallery is None:
            self.gallery.layout.display = "none"
            return
        self.gallery.value = png(detail.gallery)
        self.gallery.layout.display = None
