"""ApiError, flatten_errors(), and register(): every error is rendered as JSON."""

import logging
from http import HTTPStatus

from flask import Flask, g, jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

log = logging.getLogger("fusink.errors")

RETRY_AFTER_SECONDS = 1


class ApiError(Exception):
    """An error with an HTTP status, raised by any code that serves a request."""

    def __init__(self, code: int, message: str, *, errors=None, headers=None, extra=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}  # more fields of the body, documented in ApiErrorSchema


class StoreUnavailable(Exception):
    """Redis did not answer in time, or cannot take writes now; the agent retries."""


def flatten_errors(messages, path: str = "") -> dict[str, list[str]]:
    """`{'events': {17: {'index': [...]}}}` -> `{'events.17.index': [...]}`."""
    if isinstance(messages, dict):
        flat = {}
        for key, value in messages.items():
            child = path if key == "_schema" else f"{path}.{key}" if path else str(key)
            flat.update(flatten_errors(value, child))
        return flat
    return {path or "_schema": [messages] if isinstance(messages, str) else list(messages)}


def error_response(code: int, message: str, errors=None, headers=None, extra=None):
    body = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors:
        body["errors"] = errors
    body.update(extra or {})
    request_id = g.get("request_id")
    if request_id:
        body["request_id"] = request_id
    response = jsonify(body)
    response.status_code = code
    response.headers.update(headers or {})
    return response


def register(app: Flask) -> None:
    """Render ApiError, HTTP errors, validation errors and crashes as JSON."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return error_response(exc.code, exc.message, exc.errors, exc.headers, exc.extra)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return error_response(exc.code, exc.description, headers=headers)

    @app.errorhandler(ValidationError)
    def validation_error(exc: ValidationError):
        errors = flatten_errors(exc.messages)
        fields = ", ".join(sorted(errors))
        return error_response(422, f"Invalid request: {fields}.", errors)

    @app.errorhandler(StoreUnavailable)
    def store_unavailable(exc: StoreUnavailable):
        log.warning("redis unavailable: %s", exc)
        return error_response(
            503,
            "Storage is unavailable; retry the request.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        log.exception("unhandled error", extra={"request_id": g.get("request_id")})
        return error_response(500, "Internal error; quote the request id when reporting it.")
