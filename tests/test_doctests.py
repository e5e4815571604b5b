"""The examples in the core modules' docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

CORE = ["errors", "images", "hooks", "gapnet", "result", "render", "cli"]


@pytest.mark.parametrize("name", CORE)
def test_docstring_examples(name: str) -> None:
    mod = importlib.import_module(f"camviz.{name}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0 and result.failed == 0
