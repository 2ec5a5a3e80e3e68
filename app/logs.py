"""JSON-lines logging, X-Request-ID in and out, one access line per request."""

import logging
import re
import sys
import time
from random import getrandbits

import orjson
from flask import Flask, g, request

from . import pid

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
access_log = logging.getLogger("fusink.access")

# The attributes every LogRecord has, as an access line's record has them.
_ACCESS_DEFAULTS = dict(vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None)))
# No record names its thread or process (configure() turns those look-ups off).
_ACCESS_DEFAULTS.update(thread=None, threadName=None, processName=None)
# LogRecord attributes that are not extra fields given by the caller.
_STANDARD = set(_ACCESS_DEFAULTS) | {"message", "asctime"}


class AccessRecord(logging.LogRecord):
    """An access line's record, made in one step: what LogRecord works out for every
    record (the caller's file and module, the level's name, the process id, a system
    call) is the same for every access line, so it is copied from one made at import.

    It also keeps its fields apart (in a slot, not among its attributes), so that
    JsonFormatter need not pick them out of every attribute a record has.
    """

    __slots__ = ("fields", "size")

    def __init__(self, name: str, msg: str, fields: dict):
        attributes = _ACCESS_DEFAULTS.copy()  # one copy, rather than growing __dict__
        attributes.update(fields)
        now = time.time()
        attributes["name"], attributes["msg"], attributes["process"] = name, msg, pid.current()
        attributes["created"] = now
        attributes["msecs"] = int((now - int(now)) * 1000) + 0.0
        attributes["relativeCreated"] = (now - logging._startTime) * 1000
        self.__dict__ = attributes
        self.fields, self.size = fields, len(attributes)


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
        if type(record) is AccessRecord and len(vars(record)) == record.size:
            entry.update(record.fields)  # nothing (a filter, say) has added attributes
        else:
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
    return cached[1] + _MILLISECONDS[int((created - second) * 1000)]


_MILLISECONDS = [f".{ms:03d}Z" for ms in range(1000)]  # formatted once, not per line


def configure(level: int = logging.INFO) -> None:
    """Log JSON lines to stderr, unless logging is already set up (gunicorn, pytest)."""
    # No line carries the thread or process name: skip finding them for every
    # record (the logging docs' "Optimization" switches; the pid is kept).
    logging.logThreads = False
    logging.logMultiprocessing = False
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
        context = g._get_current_object()  # one proxy lookup instead of one per use
        context.started = time.perf_counter()  # the access line and metrics time from here
        given = request._get_current_object().environ.get("HTTP_X_REQUEST_ID", "")
        # 128 random bits from the process's generator (reseeded in a forked worker),
        # not os.urandom: an id needs to be unique, not secret, and that is a system call.
        context.request_id = given if REQUEST_ID.match(given) else f"{getrandbits(128):032x}"
        context.log_fields = {}

    @app.after_request
    def finish_request(response):
        context = g._get_current_object()
        request_id = context.get("request_id")
        if request_id:
            response.headers["X-Request-ID"] = request_id
        if not access_log.isEnabledFor(logging.INFO):
            return response
        started = context.get("started", time.perf_counter())
        principal = context.get("principal")
        current = request._get_current_object()
        method, path = current.environ["REQUEST_METHOD"], current.path
        status = response.status_code
        fields = {
            "request_id": request_id,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "principal": principal.name if principal else None,
            **context.get("log_fields", {}),
        }
        # What info() does, less its search for the caller and the record's set-up.
        access_log.handle(AccessRecord(access_log.name, f"{method} {path} {status}", fields))
        return response
