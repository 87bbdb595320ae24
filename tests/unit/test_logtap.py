"""LogTap (the soak's log copy for its PHI scan) sees what the handlers log, wherever their streams point."""

from __future__ import annotations

import io
import logging
import sys

from aws_lambda_powertools import Logger

from bench.logtap import LogTap


def test_the_tap_copies_loggers_made_before_it_prints_and_root_records_then_lets_go() -> None:
    before = io.StringIO()
    product = Logger(service="logtap-test-before", logger_handler=logging.StreamHandler(before))
    library = logging.getLogger("logtap.test.library")
    with LogTap() as tap:
        product.info("from a logger made before the tap")
        after = Logger(service="logtap-test-after")  # its handler writes to sys.stdout: the tap's copy
        after.info("from a logger made under the tap")
        print("a print")
        library.warning("a library warning")
    product.info("not copied: the tap is gone")
    text = tap.text()
    assert "from a logger made before the tap" in text and "from a logger made under the tap" in text
    assert "a print" in text and "a library warning" in text
    assert "not copied" not in text
    assert "from a logger made before the tap" in before.getvalue()  # still written where it went
    assert not any(type(h).__name__ == "_RootCopy" for h in logging.getLogger().handlers)
    assert type(sys.stdout).__name__ != "_Tee"
    after_handler = after._logger.handlers[0]
    assert type(getattr(after_handler, "stream", None)).__name__ != "_Tee"
