"""Controls of the browser beyond plain ipywidgets: *find* (any class by a part of its name).

:class:`ClassFinder` takes what the user typed when they press Enter (or leave the box), and
matches it against the class names case-insensitively as a substring
(:func:`~camviz.widgets.view.find_classes`): an exact name or the only match is shown at once;
several matches are listed under the box (and offered in its drop-down list) to pick from.
:meth:`ClassFinder.clear` empties it (the browser does so when the class dropdown changes).

Example:
    >>> picked = []
    >>> finder = ClassFinder(["tabby", "tiger cat", "moped"], picked.append)
    >>> finder.box.value = "PED"; picked, finder.box.value
    ([2], 'moped')
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as W

from camviz.widgets.view import find_classes

__all__ = ["ClassFinder", "tagged"]


def tagged(widget: Any, css: str) -> Any:
    """``widget`` with the CSS class ``css`` (tests and themes find controls by it).

    Example:
        >>> tagged(W.Button(), "camviz-x")._dom_classes
        ('camviz-x',)
    """
    widget.add_class(css)
    return widget


class ClassFinder(W.VBox):
    """The *find* box and its hint line; ``on_class(index)`` when a class is found."""

    def __init__(self, classes: Sequence[str], on_class: Callable[[int], None],
                 limit: int = 8) -> None:
        self.classes, self.on_class, self.limit = list(classes), on_class, int(limit)
        self.box = tagged(W.Combobox(
            options=self.classes, placeholder="any class: part of its name, Enter",
            ensure_option=False, continuous_update=False, description="find"),
            "camviz-class-search")
        self.hint = tagged(W.HTML(value=""), "camviz-class-hint")
        self._quiet = False
        self.box.observe(lambda c: self._submitted(str(c["new"] or "")), "value")
        super().__init__([self.box, self.hint], layout=W.Layout(margin="0"))

    @property
    def matches(self) -> list[str]:
        """The names offered in the box's list now (all classes unless a search narrowed it)."""
        return list(self.box.options)

    def _submitted(self, text: str) -> None:
        if self._quiet:
            return
        q = " ".join(text.split())
        if not q:
            self.clear()
            return
        found = find_classes(self.classes, q, self.limit + 1)
        exact = [i for i in found if self.classes[i].casefold() == q.casefold()]
        pick = exact[0] if exact else (found[0] if len(found) == 1 else None)
        if pick is not None:
            self._set(self.classes[pick], self.classes)
            self.hint.value = ""
            self.on_class(pick)
            return
        if not found:
            self.hint.value = _hint(f"no class name contains \u201c{q}\u201d")
            return
        names = [self.classes[i] for i in found[: self.limit]]
        more = " ..." if len(found) > self.limit else ""
        self._set(text, names)
        self.hint.value = _hint(f"{len(names)}{'+' if more else ''} classes contain "
                                f"\u201c{q}\u201d: {', '.join(names)}{more}; pick one from "
                                "the list or type more")

    def clear(self) -> None:
        """Empty the box and its hint, and offer every class again."""
        self._set("", self.classes)
        self.hint.value = ""

    def _set(self, value: str, options: Sequence[str]) -> None:
        self._quiet = True
        try:
            if list(self.box.options) != list(options):
                self.box.options = list(options)
            self.box.value = value
        finally:
            self._quiet = False


def _hint(text: str) -> str:
    return f'<span style="font-size:11px;color:#555">{html.escape(text)}</span>'
