"""Hooks that never outlive their call (after baukit's nethook).

Example:
    >>> layer = nn.Conv2d(3, 4, 3)
    >>> with capture(layer) as cap:
    ...     _ = layer(torch.zeros(1, 3, 8, 8))
    >>> cap.output.shape, len(layer._forward_hooks)
    (torch.Size([1, 4, 6, 6]), 0)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch  # noqa: F401  (used by the examples)
from torch import nn


@dataclass
class Captured:
    """What a hooked module produced during the ``with`` block (the last call wins)."""

    output: Any = None
    calls: int = 0


@contextmanager
def capture(module: nn.Module) -> Iterator[Captured]:
    """Record ``module``'s output while the block runs; the hook is removed on exit, also on error.

    Example:
        >>> m = nn.ReLU()
        >>> with capture(m) as cap:
        ...     _ = m(torch.tensor([-1.0, 2.0]))
        >>> cap.output.tolist()
        [0.0, 2.0]
    """
    cap = Captured()

    def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
        cap.output = out
        cap.calls += 1

    handle = module.register_forward_hook(hook)
    try:
        yield cap
    finally:
        handle.remove()


def count_hooks(model: nn.Module) -> int:
    """Number of forward / pre-forward / backward hooks left on any submodule of ``model``.

    Example:
        >>> count_hooks(nn.Sequential(nn.ReLU()))
        0
    """
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks)
        n += len(m._backward_hooks) + len(getattr(m, "_backward_pre_hooks", {}))
    return n
