"""JSON-lines logging, X-Request-ID in and out, one access line per request."""

import logging
import re
import sys
import time
import uuid

import orjson
from flask import Flask, g, request

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
access_log = logging.getLogger("fusink.access")

# LogRecord attributes that are not extra fields given by the caller.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # tells gunicorn's workers and master apart
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD:
                entry[name] = value
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


_last_second = (-1, "")  # the last second formatted, and its text: one strftime a second


def _timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds: 2026-11-25T12:42:11.233Z."""
    global _last_second
    second = int(created)
    cached = _last_second
    if cached[0] != second:
        cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _last_second = cached
    return f"{cached[1]}.{int((created - second) * 1000):03d}Z"


def configure(level: int = logging.INFO) -> None:
    """Log JSON lines to stderr, unless logging is already set up (gunicorn, pytest)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)


def register(app: Flask) -> None:
    """Take or make each request's id, echo it back, and log one access line."""

    @app.before_request
    def start_request():
        g.started = time.perf_counter()  # the access line and metrics time from here
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        g.log_fields = {}

    @app.after_request
    def finish_request(response):
        request_id = g.get("request_id")
        if request_id:
            response.headers["X-Request-ID"] = request_id
        started = g.get("started", time.perf_counter())
        principal = g.get("principal")
        access_log.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "principal": principal.name if principal else None,
                **g.get("log_fields", {}),
            },
        )
        return response
