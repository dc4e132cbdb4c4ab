"""Structured log lines carry no terminal colour: no uvicorn ``color_message``, no ANSI escape codes."""

from __future__ import annotations

import json
import logging

from infra.telemetry import JsonFormatter

GREEN, RESET = "\x1b[32m", "\x1b[0m"


def record(msg: str, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, msg, None, None)
    entry.__dict__.update(extra)
    return entry


def test_uvicorns_coloured_copy_of_the_message_is_dropped():
    # what uvicorn logs as it starts: logger.info(message, *args, extra={"color_message": coloured})
    line = JsonFormatter().format(record("Uvicorn running on http://127.0.0.1:8000",
                                         color_message=f"Uvicorn running on {GREEN}%s{RESET}"))
    entry = json.loads(line)
    assert "color_message" not in entry and "\x1b" not in line
    assert entry["msg"] == "Uvicorn running on http://127.0.0.1:8000"


def test_escape_codes_are_stripped_from_the_message_and_extra_fields():
    line = JsonFormatter().format(record(f"{GREEN}started{RESET}", status=f"\x1b[1;31m500{RESET}", count=3))
    entry = json.loads(line)
    assert (entry["msg"], entry["status"], entry["count"]) == ("started", "500", 3)
    assert "\x1b" not in line and "\\u001b" not in line
