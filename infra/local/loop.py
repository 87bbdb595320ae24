"""The polling thread shared by the stream and queue pollers: run, stop, pause, and idle bookkeeping."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("qbsync.local")


class PollingLoop:
    """Calls :meth:`poll_once` until stopped; counts consecutive idle polls for ``LocalStack.wait_idle``."""

    name = "poller"
    poll_interval_s = 0.1

    def __init__(self) -> None:
        self.idle_streak = 0
        self.cycles = 0
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._paused = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> bool:
        """One polling cycle; returns True when anything was pending or delivered."""
        raise NotImplementedError

    def start_loop(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"poller-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._pause.clear()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def pause(self, timeout: float = 10.0) -> None:
        """Stop polling after the current cycle (returns once it has finished)."""
        self._pause.set()
        if self._thread is not None and self._thread.is_alive():
            self._paused.wait(timeout)

    def resume(self) -> None:
        self._paused.clear()
        self._pause.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._pause.is_set():
                self._paused.set()
                self._stop.wait(0.02)
                continue
            try:
                busy = self.poll_once()
            except Exception:
                log.exception("poller %s failed; retrying", self.name)
                busy = True
                self._stop.wait(0.5)
            self.idle_streak = 0 if busy else self.idle_streak + 1
            self.cycles += 1
            if not busy:
                self._stop.wait(self.poll_interval_s)
