"""Captures every log record from every logger, for tests that check no secret is logged.

The suite may run with `-p no:logging` (no caplog), so tests install this handler themselves.
"""

from __future__ import annotations

import logging


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))  # with tracebacks, where secrets could hide too

    @property
    def text(self) -> str:
        return "\n".join(self.lines)
