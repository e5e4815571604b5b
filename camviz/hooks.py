"""Hooks that never outlive their call (after baukit's nethook).

Example:
    >>> layer = nn.Conv2d(3, 4, 3)
    >>> with capture(layer) as cap:
    ...     _ = layer(torch.zeros(1, 3, 8, 8))
    >>> cap.output.shape, len(layer._forward_hooks)
    (torch.Size([1, 4, 6, 6]), 0)
"""

from __future__ import annotations

import threading
import weakref
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

    Only calls made by the thread that opened the block are recorded, so two threads running
    the same model at once each capture their own output.

    Example:
        >>> m = nn.ReLU()
        >>> with capture(m) as cap:
        ...     _ = m(torch.tensor([-1.0, 2.0]))
        >>> cap.output.tolist()
        [0.0, 2.0]
    """
    cap = Captured()
    owner = threading.get_ident()

    def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
        if threading.get_ident() == owner:
            cap.output = out
            cap.calls += 1

    handle = module.register_forward_hook(hook)
    try:
        yield cap
    finally:
        handle.remove()


@contextmanager
def called_modules(model: nn.Module) -> Iterator[list[tuple[str, nn.Module]]]:
    """Record ``(name, module)`` of every submodule of ``model`` called while the block runs
    (in the order their calls end); the hooks are removed on exit, also on error.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> with called_modules(m) as called:
        ...     _ = m[1](torch.zeros(1, 2))
        >>> [name for name, _ in called], count_hooks(m)
        (['1'], 0)
    """
    called: list[tuple[str, nn.Module]] = []
    owner = threading.get_ident()
    handles = []
    for name, mod in model.named_modules():

        def hook(mod: nn.Module, _inp: Any, _out: Any, name: str = name) -> None:
            if threading.get_ident() == owner:
                called.append((name, mod))

        handles.append(mod.register_forward_hook(hook))
    try:
        yield called
    finally:
        for h in handles:
            h.remove()


_EVAL_LOCK = threading.Lock()
_EVAL_USERS: weakref.WeakKeyDictionary[nn.Module, list[Any]] = weakref.WeakKeyDictionary()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with every submodule of ``model`` in eval mode, then restore each one's
    own mode, also on error. Nested and concurrent blocks (threads) share the switch of each
    module, also of one that two models share (a new head on the same trunk): a module's mode
    comes back when the last block using it ends.

    Example:
        >>> m = nn.Sequential(nn.BatchNorm1d(2)).train()
        >>> with eval_mode(m):
        ...     inside = m[0].training
        >>> inside, m[0].training
        (False, True)
    """
    with _EVAL_LOCK:
        mods = list(model.modules())
        for m in mods:  # per module: two models may share one (a new head on the same trunk)
            entry = _EVAL_USERS.get(m)
            if entry is None:
                entry = _EVAL_USERS[m] = [0, m.training]
                m.training = False
            entry[0] += 1
    try:
        yield
    finally:
        with _EVAL_LOCK:
            for m in mods:
                entry = _EVAL_USERS[m]
                entry[0] -= 1
                if entry[0] == 0:
                    m.training = entry[1]
                    del _EVAL_USERS[m]


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


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch's CPU ops with ``n`` intra-op threads inside the block, then restore.

    For work on small tensors, where intra-op threads cost more than they give: on a busy
    2-core machine a 224 x 224 ``amax`` took 8 ms with 2 threads and 5 us with one (the
    widgets' redraws), and an SVM head on 800 x 128 features 14 s with 2 threads and 1.8 s
    with one (small head fits). The count is process-wide while the block runs.

    Example:
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
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
