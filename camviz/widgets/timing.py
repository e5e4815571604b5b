"""When the browser does its work: a throttle for slider drags, and jobs off the kernel's thread.

No ipywidgets here. In a Jupyter kernel widget callbacks run on the kernel's asyncio loop; both
helpers use that loop when there is one (a timer for the throttle, ``call_soon_threadsafe`` to
come back from a worker thread) and work synchronously when there is none (plain Python, tests).

* :class:`Throttle`: a slider sends a value on every mouse move; drawing each one (about 200 ms
  on a busy machine) made a drag lag behind the mouse. The throttle draws at most once per
  ``interval`` (0.1 s: about ten redraws a second), coalesces the values in between, and always
  draws the last value once the drag stops.
* :class:`Background`: saving a figure takes seconds (matplotlib renders a 300-dpi PDF); it runs
  in one worker thread while the kernel keeps answering, and its result (or error) is handed
  back on the loop.

Example:
    >>> drawn = []
    >>> t = Throttle(drawn.append, interval=0.1, clock=lambda: 0.0, later=None)
    >>> t(1); t(2); t.flush(); drawn
    [1, 2]
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["Throttle", "Background", "running_loop"]

_UNSET = object()


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop running in this thread (a Jupyter kernel's), or None.

    Example:
        >>> running_loop() is None
        True
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _loop_later(delay: float, fn: Callable[[], None]) -> bool:
    loop = running_loop()
    if loop is None:
        return False
    loop.call_later(delay, fn)
    return True


class Throttle:
    """Call ``fn(value)`` at most once per ``interval`` seconds; the last value is always drawn.

    A value that comes less than ``interval`` after the last call is kept (replacing any kept
    before it), and one call with the newest kept value is scheduled for when the interval is
    over. ``later(delay, callback) -> bool`` schedules (by default on the running asyncio loop;
    it returns False where there is none, and then every value is drawn at once). ``clock``
    gives seconds. :meth:`flush` draws a kept value now.

    Example:
        >>> now, drawn, timers = [0.0], [], []
        >>> t = Throttle(drawn.append, 0.1, clock=lambda: now[0],
        ...              later=lambda d, f: timers.append(f) or True)
        >>> t(1); t(2); t(3); drawn, len(timers)
        ([1], 1)
        >>> now[0] = 0.1; timers.pop()(); drawn
        [1, 3]
    """

    def __init__(
        self, fn: Callable[[Any], None], interval: float = 0.1,
        clock: Callable[[], float] | None = None,
        later: Callable[[float, Callable[[], None]], bool] | None = _loop_later,
    ) -> None:
        self.fn, self.interval = fn, float(interval)
        self.clock = clock or time.monotonic
        self.later = later
        self._last = -float("inf")
        self._pending: Any = _UNSET
        self._scheduled = False

    @property
    def pending(self) -> bool:
        """Whether a value waits to be drawn."""
        return self._pending is not _UNSET

    def __call__(self, value: Any) -> None:
        wait = self._last + self.interval - self.clock()
        if wait <= 0 and not self._scheduled:
            self._draw(value)
            return
        self._pending = value
        if not self._scheduled:
            if self.later is not None and self.later(max(wait, 0.0), self._fire):
                self._scheduled = True
            else:
                self.flush()

    def _fire(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Draw the kept value now (nothing if none is kept)."""
        if self._pending is not _UNSET:
            value, self._pending = self._pending, _UNSET
            self._draw(value)

    def _draw(self, value: Any) -> None:
        self._last = self.clock()
        self.fn(value)


class Background:
    """Jobs in one worker thread, one at a time, their outcome handed back to the loop.

    :meth:`submit` runs ``job()`` in the worker and then ``done(result, error)`` (one of them
    None) on the asyncio loop that was running when it was submitted, so widget updates stay on
    the kernel's thread. Without a running loop the job runs at once in the caller's thread.
    Returns a :class:`~concurrent.futures.Future` that completes after ``done`` has run.

    Example:
        >>> got = []
        >>> Background().submit(lambda: 6 * 7, lambda r, e: got.append((r, e))).result()
        >>> got
        [(42, None)]
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], Any],
               done: Callable[[Any, BaseException | None], None]) -> Future[None]:
        """Run ``job`` (in the worker when a loop runs), then ``done`` (on the loop)."""
        loop = running_loop()
        finished: Future[None] = Future()
        if loop is None:
            _deliver(job, done, finished)
            return finished

        def work() -> None:
            try:
                result, error = job(), None
            except Exception as err:  # every failure goes to done(), never lost in the thread
                result, error = None, err
            loop.call_soon_threadsafe(_finish, done, result, error, finished)

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camviz-save")
            self._pool.submit(work)
        return finished


def _deliver(job: Callable[[], Any], done: Callable[[Any, BaseException | None], None],
             finished: Future[None]) -> None:
    try:
        result, error = job(), None
    except Exception as err:
        result, error = None, err
    _finish(done, result, error, finished)


def _finish(done: Callable[[Any, BaseException | None], None], result: Any,
            error: BaseException | None, finished: Future[None]) -> None:
    try:
        done(result, error)
    except BaseException as err:
        finished.set_exception(err)
        raise
    finished.set_result(None)
