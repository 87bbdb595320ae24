"""Keep a copy of everything a run logs, so it can be scanned afterwards (the soak's PHI and token scan).

In Lambda a function's log is what it writes to stdout / stderr. The local stack runs the handlers in this
process, so ``LogTap`` copies, while it is installed:

- every write to ``sys.stdout`` and ``sys.stderr`` (print, warnings, loggers created while it is installed);
- every write of the ``logging.StreamHandler``s that already exist (Powertools' logger keeps the stream it was
  created with, which may be a stream from before the tap);
- every record that reaches the root logger, formatted with its exception text (libraries' logs).

The writes still go where they went (unless ``echo=False``: a test whose failure report must not drown in the
run's logs); the copy is kept in memory (``text()``).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO


class _Tee:
    def __init__(self, inner: TextIO, tap: LogTap) -> None:
        self._inner = inner
        self._tap = tap

    def write(self, s: str) -> int:
        self._tap.keep(s)
        return self._inner.write(s) if self._tap.echo else len(s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _RootCopy(logging.Handler):
    def __init__(self, tap: LogTap) -> None:
        super().__init__(logging.NOTSET)
        self._tap = tap
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self._tap.keep(self.format(record) + "\n")


class LogTap:
    def __init__(self, *, echo: bool = True) -> None:
        self.echo = echo
        self._parts: list[str] = []
        self._lock = threading.Lock()
        self._undo: list[Any] = []

    def keep(self, s: str) -> None:
        with self._lock:
            self._parts.append(s)

    def text(self) -> str:
        with self._lock:
            return "".join(self._parts)

    def __enter__(self) -> LogTap:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, self), _Tee(err, self)  # type: ignore[assignment]
        self._undo.append(lambda: (setattr(sys, "stdout", out), setattr(sys, "stderr", err)))
        for h in _handlers():
            if type(h) is logging.StreamHandler and not isinstance(h.stream, _Tee):
                stream = h.stream
                h.stream = _Tee(stream, self)
                self._undo.append(lambda h=h, stream=stream: setattr(h, "stream", stream))
        root_copy = _RootCopy(self)
        logging.getLogger().addHandler(root_copy)
        self._undo.append(lambda: logging.getLogger().removeHandler(root_copy))
        return self

    def __exit__(self, *exc: object) -> None:
        while self._undo:
            self._undo.pop()()
        for h in _handlers():  # handlers created while the tap was installed
            stream = getattr(h, "stream", None)
            if isinstance(stream, _Tee) and stream._tap is self:
                h.stream = stream._inner


def _handlers() -> Iterator[logging.Handler]:
    """Every handler of the root logger and of every named logger (placeholders have none)."""
    for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        yield from getattr(lg, "handlers", ())
