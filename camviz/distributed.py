"""Dataset passes sharded over processes with torch.distributed: who this rank is, which items
are its own, how ranks agree on failure, and how they exchange states (bytes, no pickle).

Inside an initialised process group (``torchrun``, or ``torch.distributed.init_process_group``)
:func:`world` gives ``(rank, size)``; outside one it is ``(0, 1)`` and every helper here is a
no-op, so the same code runs in one process. Shards (:func:`shard`) are contiguous blocks of
whole batches: rank r reads batches ``[r * B / size, (r + 1) * B / size)`` of the B batches a
single process would read, so no item is read twice, none is padded, and every rank sees the
very batches one process would (which makes the merged answer identical to one process's).

States go through tensors of bytes (a JSON header and raw arrays, no pickle) on the backend's
device (CPU for gloo, the rank's GPU for NCCL): rank 0 receives them one rank at a time and
merges (memory: two states), then broadcasts the merged state, so every rank returns the same
answer.

Example:
    >>> world()
    (0, 1)
    >>> [list(shard(10, 3, r, 2)) for r in range(2)]   # 4 batches of 3: two per rank
    [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]]
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from camviz.errors import CamvizError

__all__ = ["world", "shard", "pack", "unpack", "broadcast_bytes", "all_gather_bytes", "share",
           "together", "Heartbeat", "merge_on_all", "joined", "timeout_seconds"]

T = TypeVar("T")


def world(enabled: bool = True) -> tuple[int, int]:
    """``(rank, size)`` of the initialised process group, else ``(0, 1)`` (also with
    ``enabled=False``: this process works alone).

    Example:
        >>> world(enabled=False)
        (0, 1)
    """
    if enabled and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(n: int, batch_size: int, rank: int, size: int) -> range:
    """The items of rank ``rank`` of ``size``: a contiguous block of whole batches (the last
    batch of the dataset may be short), as even as whole batches allow; ranks past the last
    batch get an empty range.

    Example:
        >>> [len(shard(100, 32, r, 3)) for r in range(3)]   # batches 0 | 1 | 2, 3
        [32, 32, 36]
    """
    if batch_size < 1 or size < 1 or not 0 <= rank < size:
        raise CamvizError(f"bad shard request: rank {rank} of {size}, batch size {batch_size}")
    batches = -(-n // batch_size)
    lo, hi = batches * rank // size, batches * (rank + 1) // size
    return range(min(lo * batch_size, n), min(hi * batch_size, n))


def timeout_seconds() -> float:
    """How long a rank waits for the others (``$CAMVIZ_DIST_TIMEOUT``, default 1800 s).

    Example:
        >>> timeout_seconds() > 0
        True
    """
    text = os.environ.get("CAMVIZ_DIST_TIMEOUT", "1800")
    try:
        value = float(text)
    except ValueError:
        raise CamvizError(f"CAMVIZ_DIST_TIMEOUT={text!r} is not a number of seconds") from None
    if value <= 0:
        raise CamvizError(f"CAMVIZ_DIST_TIMEOUT must be positive, got {text}")
    return value


# ----------------------------------------------------------------------------- bytes of states


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as bytes: a JSON header (names, dtypes, shapes) then the raw data (no pickle, no
    zip: one copy each way, which an npz archive would make several times slower).

    Example:
        >>> unpack(pack({"a": np.arange(3)}))["a"].tolist()
        [0, 1, 2]
    """
    parts, head = [], []
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.hasobject:
            raise CamvizError(f"cannot send array {name!r} of objects between ranks")
        head.append([name, a.dtype.str, list(a.shape), a.nbytes])
        parts.append(a.tobytes())  # C order, whatever the strides
    header = json.dumps(head).encode()
    return b"".join([len(header).to_bytes(8, "little"), header, *parts])


def unpack(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of :func:`pack` (writable views of one copy of ``data``).

    Example:
        >>> sorted(unpack(pack({"x": np.zeros(1), "y": np.array("text")})))
        ['x', 'y']
    """
    n = int.from_bytes(data[:8], "little")
    pos, out, buf = 8 + n, {}, bytearray(data)
    for name, dtype, shape, nbytes in json.loads(data[8:8 + n]):
        out[name] = np.frombuffer(buf, dtype=np.dtype(dtype), count=int(np.prod(shape)),
                                  offset=pos).reshape(tuple(shape))
        pos += nbytes
    return out


def _device() -> torch.device:
    backend = str(dist.get_backend())
    if "gloo" in backend or "nccl" not in backend:
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def _lost(err: BaseException) -> CamvizError:
    return CamvizError(
        f"lost contact with the other ranks ({type(err).__name__}: {str(err)[:300]}); one of "
        f"them died or did not answer within {timeout_seconds():g} s (CAMVIZ_DIST_TIMEOUT): "
        "see its own output"
    )


@contextmanager
def _comm() -> Iterator[None]:
    try:
        yield
    except (RuntimeError, ConnectionError) as err:  # gloo / NCCL errors, timeouts included
        raise _lost(err) from err


def _to_tensor(data: bytes, length: int, dev: torch.device) -> torch.Tensor:
    t = torch.zeros(length, dtype=torch.uint8)
    if data:
        t[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return t.to(dev)


def broadcast_bytes(data: bytes | None, src: int = 0) -> bytes:
    """Rank ``src``'s ``data`` on every rank (alone: ``data`` itself).

    Example:
        >>> broadcast_bytes(b"abc")
        b'abc'
    """
    rank, size = world()
    if size == 1:
        return data or b""
    mine = (data or b"") if rank == src else b""
    dev = _device()
    with _comm():
        n = torch.tensor([len(mine)], dtype=torch.int64, device=dev)
        dist.broadcast(n, src)
        buf = _to_tensor(mine, int(n.item()), dev)
        dist.broadcast(buf, src)
    return mine if rank == src else bytes(buf.cpu().numpy())


def all_gather_bytes(data: bytes) -> list[bytes]:
    """Every rank's ``data``, in rank order, on every rank (small messages: it pads to the
    longest).

    Example:
        >>> all_gather_bytes(b"x")
        [b'x']
    """
    _, size = world()
    if size == 1:
        return [data]
    dev = _device()
    with _comm():
        n = torch.tensor([len(data)], dtype=torch.int64, device=dev)
        sizes = [torch.zeros_like(n) for _ in range(size)]
        dist.all_gather(sizes, n)
        longest = int(max(int(s.item()) for s in sizes))
        out = [torch.zeros(longest, dtype=torch.uint8, device=dev) for _ in range(size)]
        dist.all_gather(out, _to_tensor(data, longest, dev))
    return [bytes(o[: int(s.item())].cpu().numpy()) for o, s in zip(out, sizes)]


def _send(data: bytes, dst: int) -> None:
    dev = _device()
    dist.send(torch.tensor([len(data)], dtype=torch.int64, device=dev), dst)
    dist.send(_to_tensor(data, len(data), dev), dst)


def _recv(src: int) -> bytes:
    dev = _device()
    n = torch.zeros(1, dtype=torch.int64, device=dev)
    dist.recv(n, src)
    buf = torch.zeros(int(n.item()), dtype=torch.uint8, device=dev)
    dist.recv(buf, src)
    return bytes(buf.cpu().numpy())


# ----------------------------------------------------------------------------- agreement


def share(fn: Callable[[], Any], what: str) -> Any:
    """``fn()`` computed on rank 0 (a JSON value), given to every rank; if it raises there,
    every rank raises (rank 0 its own error, the others a :class:`CamvizError` quoting it).

    Example:
        >>> share(lambda: {"a": 1}, "a test")
        {'a': 1}
    """
    rank, size = world()
    if size == 1:
        return fn()
    value: Any = None
    error: BaseException | None = None
    if rank == 0:
        try:
            value = {"ok": fn()}
        except BaseException as err:  # noqa: BLE001 - re-raised below, after telling the others
            error, value = err, {"error": f"{type(err).__name__}: {err}"}
    got = json.loads(broadcast_bytes(json.dumps(value).encode() if rank == 0 else None))
    if error is not None:
        raise error
    if "error" in got:
        raise CamvizError(f"{what}: rank 0 of {size} failed: {got['error']}")
    return got["ok"]


@contextmanager
def together(what: str) -> Iterator[None]:
    """Run the block on every rank, then agree: if it raised on any rank, it raises on every
    rank (the failing rank its own error, the others a :class:`CamvizError` naming the rank and
    its error), so no rank waits for a partner that has given up. A rank that dies outright is
    seen as lost contact (gloo at once; otherwise after :func:`timeout_seconds`).

    Example:
        >>> with together("a test"):
        ...     x = 1
    """
    _, size = world()
    if size == 1:
        yield
        return
    error: BaseException | None = None
    try:
        yield
    except BaseException as err:  # noqa: BLE001 - every rank must reach the agreement below
        error = err
    note = None if error is None else {"error": f"{type(error).__name__}: {error}",
                                       "peer": isinstance(error, _PeerFailed)}
    try:
        notes = [json.loads(m) for m in all_gather_bytes(json.dumps(note).encode())]
    except CamvizError:
        if error is not None:
            raise error from None
        raise
    if error is not None and not isinstance(error, _PeerFailed):
        raise error
    bad = [(r, m) for r, m in enumerate(notes) if m is not None and not m["peer"]]
    if bad:
        r, m = bad[0]
        raise CamvizError(f"{what}: rank {r} of {size} failed ({m['error']}); every rank stops. "
                          "Fix it and rerun the same command: checkpoints written so far are "
                          "kept")
    if error is not None:
        raise error


class _PeerFailed(CamvizError):
    """Another rank failed (this one learnt it at a heartbeat)."""


class Heartbeat:
    """Ranks tell each other every ``every`` batches that they are fine, so that a rank whose
    pass fails stops the others within ``every`` batches rather than at the end of their shards.

    Every rank calls :meth:`start` (with its batches still to do, or None when it failed
    before its loop), :meth:`batch_done` after each batch, and :meth:`failed` when its loop
    raised; the beats are the first ``min(remaining) // every`` multiples of ``every``, the same
    number on every rank, so the collectives always pair up. Alone it does nothing.

    Example:
        >>> hb = Heartbeat("a test", every=2); hb.start(5); hb.batch_done(); hb.beats
        0
    """

    def __init__(self, what: str, every: int = 50) -> None:
        rank, self.size = world()
        self.what, self.every = what, max(int(every), 0)
        self.active = self.size > 1 and self.every > 0
        self.done = self.beats = self.total = 0
        self.stopped = False

    def start(self, remaining: int | None) -> None:
        """Agree on the number of beats; None: this rank failed already (every rank stops)."""
        if not self.active:
            return
        if remaining is None:
            self.stopped = True
            with contextlib.suppress(CamvizError):
                all_gather_bytes(b"F")
            return
        counts = all_gather_bytes(str(int(remaining)).encode())
        self._check(counts, alive=True)
        self.total = min(int(c) for c in counts) // self.every

    def batch_done(self) -> None:
        """One more batch done; beat (a collective) when it is a beat's turn."""
        if self.active:
            self.done += 1
            if self.done % self.every == 0 and self.beats < self.total:
                self._beat(True)

    def failed(self) -> None:
        """This rank's loop raised: tell the others at their next beat (if one is left and the
        failure is not another rank's, which every rank learnt at the same beat)."""
        if self.active and not self.stopped and self.beats < self.total:
            self.stopped = True
            with contextlib.suppress(CamvizError):  # the others may be gone already
                self._beat(False)

    def _beat(self, ok: bool) -> None:
        self.beats += 1
        self._check(all_gather_bytes(b"1" if ok else b"F"), alive=ok)

    def _check(self, flags: list[bytes], alive: bool) -> None:
        bad = [r for r, f in enumerate(flags) if f == b"F"]
        if bad and alive:
            self.stopped = True
            raise _PeerFailed(f"{self.what}: rank {bad[0]} of {self.size} failed (its own "
                              "output says why); every rank stops")


def merge_on_all(local: T, to_bytes: Callable[[T], bytes], from_bytes: Callable[[bytes], T],
                 merge: Callable[[T, T], T]) -> T:
    """Merge every rank's ``local`` state: rank 0 receives the others' in rank order, one at a
    time, folding each in with ``merge(acc, other)``, then broadcasts the result, which every
    rank returns.

    Example:
        >>> merge_on_all(3, lambda v: bytes([v]), lambda b: b[0], lambda a, b: a + b)
        3
    """
    rank, size = world()
    if size == 1:
        return local
    with _comm():
        if rank == 0:
            acc = local
            for r in range(1, size):
                acc = merge(acc, from_bytes(_recv(r)))
        else:
            _send(to_bytes(local), 0)
    data = broadcast_bytes(to_bytes(acc) if rank == 0 else None)
    return acc if rank == 0 else from_bytes(data)


# ----------------------------------------------------------------------------- torchrun


@contextmanager
def joined(device: str = "auto") -> Iterator[str]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) join the process group for
    the block and yield this rank's device: ``cuda:LOCAL_RANK`` (NCCL for CUDA tensors, gloo
    for the rest) when CUDA is there and ``device`` is ``auto`` or ``cuda``, else the CPU with
    gloo. Outside torchrun, or in a group already initialised, it yields ``device`` unchanged.

    Example:
        >>> with joined("cpu") as dev:
        ...     dev
        'cpu'
    """
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1 or dist.is_initialized():
        yield device
        return
    if "MASTER_ADDR" not in os.environ or "RANK" not in os.environ:
        raise CamvizError("WORLD_SIZE is set but RANK / MASTER_ADDR are not: start several "
                          "processes with torchrun --nproc_per_node N -m camviz ...")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    gpu = torch.cuda.is_available() and device in ("auto", "cuda")
    if gpu:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    elif device == "auto":
        device = "cpu"
    backend = "cpu:gloo,cuda:nccl" if gpu else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_seconds()))
    try:
        yield device
    finally:
        dist.destroy_process_group()
