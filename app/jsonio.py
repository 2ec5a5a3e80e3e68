"""The Flask JSON provider: orjson, with exact fallbacks where orjson is lossy."""

import json

import orjson
from flask.json.provider import JSONProvider

from . import rows

# orjson turns integers beyond 64 bits into floats; a run of 19 digits may be one.
# Mapping digits to "0" and all else to "x" finds such a run ten times faster than a regex.
DIGITS_AS_ZERO = bytes(b"0"[0] if chr(b).isdigit() and b < 128 else b"x"[0] for b in range(256))
LONG_DIGITS = b"0" * 19
EXCERPT_CHARS = 10  # shown on each side of a syntax error; never the whole body
CONSTANTS = ("-Infinity", "Infinity", "NaN")


class MalformedJson(ValueError):
    """A body that is not JSON; the message names the problem and where it is."""


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


def describe_malformed(data: bytes) -> str:
    """What is wrong with a body that failed to parse, and at which line and column."""
    if not data.strip():
        return "Malformed JSON: the body is empty."
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_column(data[: exc.start].decode("utf-8"))
        return (
            f"Malformed JSON: invalid UTF-8 byte 0x{data[exc.start]:02x} "
            f"at line {line}, column {column}."
        )
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return _syntax_error(text, exc.msg, exc.pos)
    try:
        json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        return _syntax_error(text, exc.msg, exc.pos)
    except ValueError as exc:
        return f"Malformed JSON: {exc}."
    return "Malformed JSON."


def _syntax_error(text: str, message: str, pos: int) -> str:
    if pos > 0 and text.startswith("-Infinity", pos - 1):
        pos -= 1  # orjson points past the sign
    constant = next((c for c in CONSTANTS if text.startswith(c, pos)), None)
    if constant is not None:
        message = f"{constant.lstrip('-')} is not a JSON number"
    line, column = _line_column(text[:pos])
    near = text[max(0, pos - EXCERPT_CHARS) : pos + EXCERPT_CHARS]
    return f"Malformed JSON: {message} at line {line}, column {column} (near {near!r})."


def _line_column(before: str) -> tuple[int, int]:
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


class OrjsonProvider(JSONProvider):
    """Parse and render request and response bodies with orjson."""

    def loads(self, s, **kwargs):
        data = s if isinstance(s, bytes) else s.encode()
        try:
            if LONG_DIGITS in data.translate(DIGITS_AS_ZERO):
                return json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
            return orjson.loads(data)
        except ValueError:
            raise MalformedJson(describe_malformed(data)) from None

    def dumps(self, obj, **kwargs) -> str:
        return rows.encode(obj).decode()

    def response(self, *args, **kwargs):
        obj = self._prepare_response_obj(args, kwargs)
        # content_type is taken as given; mimetype would be parsed for a charset.
        return self._app.response_class(rows.encode(obj), content_type="application/json")
