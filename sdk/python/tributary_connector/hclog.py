"""hclog-compatible JSON logging for plugins (one JSON object per line on stderr).

Go hosts parse every stderr line of a plugin as hclog JSON and **crash** when ``@level``,
``@message`` or ``@timestamp`` is not a string, and treat a line whose timestamp does not match
``2006-01-02T15:04:05.000000Z07:00`` as plain text. This formatter always emits string values and
the exact layout (6 fractional digits, ``Z``).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
import threading
from typing import Any, Dict, Optional

#: Python level -> hclog level name.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

# Attributes every LogRecord has; anything else was passed through ``extra=`` and becomes a
# key/value pair of the hclog line.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message", "asctime", "taskName"}


def hclog_level(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    if levelno >= logging.DEBUG:
        return "debug"
    return "trace"


def format_timestamp(epoch_seconds: float) -> str:
    """UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` - the layout Go hosts accept."""
    t = _dt.datetime.fromtimestamp(epoch_seconds, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}Z"


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


class HclogFormatter(logging.Formatter):
    """Formats a LogRecord as one hclog JSON line (without the newline)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: Dict[str, Any] = {
            "@level": hclog_level(record.levelno),
            "@message": str(record.getMessage()),
            "@module": str(record.name),
            "@timestamp": format_timestamp(record.created),
        }
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRS or key.startswith("_") or key in entry:
                continue
            entry[key] = _jsonable(value)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["error"] = str(record.exc_text)
        if record.stack_info:
            entry["stack"] = str(record.stack_info)
        # ensure_ascii keeps the line valid UTF-8 whatever the message holds (lone surrogates...).
        return json.dumps(entry, ensure_ascii=True, separators=(",", ":"))


class HclogHandler(logging.Handler):
    """Writes hclog lines to a file descriptor with one ``write`` per line.

    Writing to the descriptor (not to ``sys.stderr``) keeps each line in a single system call, so
    lines from several threads never interleave, and works even if ``sys.stderr`` is replaced.
    """

    def __init__(self, fd: int = 2, level: int = logging.NOTSET):
        super().__init__(level)
        self.fd = fd
        self.setFormatter(HclogFormatter())
        self._write_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "replace")
            with self._write_lock:
                view = memoryview(data)
                while view:
                    n = os.write(self.fd, view)
                    view = view[n:]
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def parse_level(name: Optional[str], default: int = logging.DEBUG) -> int:
    if not name:
        return default
    name = name.strip().lower()
    return {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
            "warning": logging.WARNING, "error": logging.ERROR, "off": logging.CRITICAL + 10}.get(
                name, default)


_configured = False


def configure(level: Optional[int] = None, fd: int = 2) -> None:
    """Route the root logger (so every library's logging) to hclog JSON on ``fd``.

    The level comes from ``level``, else ``$TRIBUTARY_LOG_LEVEL`` (trace/debug/info/warn/error/off),
    else debug (go-plugin plugins log at trace by default; the host filters). Idempotent.
    """
    global _configured
    root = logging.getLogger()
    if level is None:
        level = parse_level(os.environ.get("TRIBUTARY_LOG_LEVEL"))
    root.setLevel(level)
    if _configured:
        return
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(HclogHandler(fd))
    logging.captureWarnings(True)

    def excepthook(exc_type, exc, tb):
        logging.getLogger("tributary_connector").error(
            "uncaught exception: %s", exc, exc_info=(exc_type, exc, tb))

    def thread_excepthook(args):
        if args.exc_type is SystemExit:
            return
        logging.getLogger("tributary_connector").error(
            "uncaught exception in thread %s: %s", getattr(args.thread, "name", "?"), args.exc_value,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    _configured = True
