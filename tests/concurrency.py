"""Run a function on ``n`` threads released together (a barrier), for tests of concurrent callers."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any


def run_at_once(
    n: int,
    fn: Callable[[int], Any],
    *,
    timeout_s: float = 60.0,
    each: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> list[Any]:
    """``fn(0) … fn(n-1)`` on their own threads, started together. Returns each result, or the exception raised.

    ``each()`` is entered by every thread before the start (a coalescer's ``worker()``: all are counted first)."""
    results: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        with each():
            barrier.wait()
            try:
                results[i] = fn(i)
            except BaseException as exc:  # handed to the test
                results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    return results
