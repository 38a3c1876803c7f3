import json
import logging
import os
import re

import pytest

from tributary_connector.hclog import (TRACE, HclogFormatter, HclogHandler, format_timestamp,
                                       hclog_level, parse_level)

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def record(msg, *args, level=logging.INFO, name="mod", **extra):
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_timestamp_layout():
    assert format_timestamp(0) == "1970-01-01T00:00:00.000000Z"
    assert format_timestamp(1767323045.5) == "2026-01-02T03:04:05.500000Z"
    assert format_timestamp(1767323045.000001).endswith(".000001Z")
    assert TIMESTAMP.match(format_timestamp(1767323045.123456789))


def test_line_has_string_fields_and_extras():
    line = HclogFormatter().format(record("sync %s", "done", pages=3, obj={"a": [1]}, odd=object()))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["@level"] == "info"
    assert entry["@message"] == "sync done"
    assert entry["@module"] == "mod"
    assert TIMESTAMP.match(entry["@timestamp"])
    assert entry["pages"] == 3 and entry["obj"] == {"a": [1]}
    assert isinstance(entry["odd"], str)
    for key in ("@level", "@message", "@module", "@timestamp"):
        assert isinstance(entry[key], str)


def test_non_string_message_becomes_a_string():
    entry = json.loads(HclogFormatter().format(record(123)))
    assert entry["@message"] == "123"


def test_exception_goes_to_error_field():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys
        rec = logging.LogRecord("m", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = json.loads(HclogFormatter().format(rec))
    assert entry["@level"] == "error"
    assert "RuntimeError: boom" in entry["error"]


def test_output_is_ascii_even_for_odd_text():
    line = HclogFormatter().format(record("caf\u00e9 \udcff"))
    line.encode("ascii")
    assert json.loads(line)["@message"] == "caf\u00e9 \udcff"


@pytest.mark.parametrize("levelno,name", [
    (TRACE, "trace"), (logging.DEBUG, "debug"), (logging.INFO, "info"),
    (logging.WARNING, "warn"), (logging.ERROR, "error"), (logging.CRITICAL, "error")])
def test_levels(levelno, name):
    assert hclog_level(levelno) == name


def test_parse_level():
    assert parse_level("WARN") == logging.WARNING
    assert parse_level("trace") == TRACE
    assert parse_level(None) == logging.DEBUG
    assert parse_level("bogus", logging.INFO) == logging.INFO


def test_handler_writes_one_line_per_record():
    r, w = os.pipe()
    try:
        h = HclogHandler(fd=w)
        h.handle(record("one"))
        h.handle(record("two", level=logging.WARNING))
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
    finally:
        os.close(r)
    lines = data.decode().splitlines()
    assert [json.loads(x)["@message"] for x in lines] == ["one", "two"]
    assert json.loads(lines[1])["@level"] == "warn"
