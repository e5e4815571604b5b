"""The unit panel of the browser: header, ranking toggle, unit cards, detail and gallery.

It draws what a :class:`~camviz.widgets.view.Frame` says (the tiles, ids, weights, shares and
mask areas of the class's top units; the selected unit's numbers and gallery) and reports a
card's button to ``on_select`` with the unit's id.

Example:
    >>> panel = UnitPanel(units=3, on_select=print)  # doctest: +SKIP
    >>> panel.show(frame)  # doctest: +SKIP
"""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as W

from camviz.widgets.drawing import TILE, jpeg, png
from camviz.widgets.view import UNIT_ORDERS, ErrorFrame, Frame, UnitDetail, UnitTile

__all__ = ["UnitPanel"]

_RED = "#b00020"


def _label(tile: UnitTile) -> str:
    return (f'<div style="font-size:11px;line-height:1.2">unit <b>{tile.unit}</b><br>'
            f"w {tile.weight:+.3g}<br>{tile.share:+.1%} of logit<br>"
            f"mask {tile.area:.0%} of image</div>")


def _header(frame: Frame) -> str:
    name = html.escape(frame.class_name)
    how = ("weight w_ck" if frame.state.unit_order == "weight"
           else "contribution on this image")
    rule = ("masks: unit map above its dataset quantile" if frame.dataset_masks
            else "masks: unit map above threshold x its max (pass stats= for dataset "
            "thresholds)")
    return (f"<b>Top units of {name}</b> by {html.escape(how)}<br>"
            f'<span style="font-size:11px">{html.escape(rule)}</span>')


def _detail(frame: Frame, d: UnitDetail) -> str:
    name = html.escape(frame.class_name)
    head = (f"<b>unit {d.unit}</b> for <b>{name}</b>: weight {d.weight:+.4g}, pooled "
            f"activation {d.pooled:.4g}, contribution {d.contribution:+.4g} "
            f"({d.share:+.1%} of logit)")
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


class UnitPanel(W.VBox):
    """Header, ranking toggle (``order``), ``units`` cards (image, label, button), detail and
    gallery; each carries a ``camviz-unit-*`` CSS class."""

    def __init__(self, units: int, on_select: Callable[[int], None],
                 order: str = "weight") -> None:
        self.on_select = on_select
        self.header = W.HTML(value="").add_class("camviz-unit-header")
        self.order = W.ToggleButtons(
            options=[(f"by {o}", o) for o in UNIT_ORDERS], value=order)
        self.order.add_class("camviz-unit-order")
        self.cards: list[tuple[W.Image, W.HTML, W.Button]] = []
        boxes = []
        for j in range(int(units)):
            img = W.Image(format="jpeg", width=TILE, height=TILE).add_class("camviz-unit-image")
            lab = W.HTML(value="").add_class("camviz-unit-label")
            btn = W.Button(description="show", layout=W.Layout(width=f"{TILE}px"))
            btn.add_class("camviz-unit-btn")
            btn.on_click(lambda _b, j=j: self._clicked(j))
            self.cards.append((img, lab, btn))
            card = W.VBox([img, lab, btn], layout=W.Layout(align_items="flex-start",
                                                            margin="2px"))
            boxes.append(card.add_class("camviz-unit-card"))
        self.detail = W.HTML(value="").add_class("camviz-unit-detail")
        self.gallery = W.Image(format="png", layout=W.Layout(display="none"))
        self.gallery.add_class("camviz-unit-gallery")
        grid = W.GridBox(boxes, layout=W.Layout(grid_template_columns=f"repeat(3, {TILE + 8}px)"))
        super().__init__([self.header, self.order, grid, self.detail, self.gallery],
                         layout=W.Layout(align_items="flex-start", margin="0 0 0 12px"))
        self.add_class("camviz-units")
        self._units: tuple[UnitTile, ...] = ()
        self._detail: UnitDetail | None = None

    def _clicked(self, j: int) -> None:
        if j < len(self._units):
            self.on_select(self._units[j].unit)

    def show(self, frame: Frame | ErrorFrame) -> None:
        """Draw the frame's units and selected unit (an error frame clears the panel)."""
        if isinstance(frame, ErrorFrame):
            self._set_cards(())
            self.header.value = ""
            self._set_detail("", None)
            return
        if frame.units is not self._units:
            self._set_cards(frame.units)
        self.header.value = _header(frame) if self.cards else ""
        if frame.detail is None:
            self._set_detail("", None)
        elif frame.detail is not self._detail:
            self._set_detail(_detail(frame, frame.detail), frame.detail)

    def _set_cards(self, tiles: tuple[UnitTile, ...]) -> None:
        self._units = tiles
        for j, (img, lab, btn) in enumerate(self.cards):
            if j >= len(tiles):
                img.value, lab.value, btn.disabled = b"", "", True
                continue
            img.value = jpeg(tiles[j].tile)
            lab.value = _label(tiles[j])
            btn.description = f"unit {tiles[j].unit}"
            btn.disabled = False

    def _set_detail(self, text: str, detail: UnitDetail | None) -> None:
        self._detail = detail
        self.detail.value = text
        if detail is None or detail.gallery is None:
            self.gallery.layout.display = "none"
            return
        self.gallery.value = png(detail.gallery)
        self.gallery.layout.display = None
