"""The Flask JSON provider: orjson, with exact fallbacks where orjson is lossy."""

import json
import re

import orjson
from flask.json.provider import JSONProvider

from . import rows

# orjson turns integers beyond 64 bits into floats; a 19-digit run may be one.
LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


class OrjsonProvider(JSONProvider):
    """Parse and render request and response bodies with orjson."""

    def loads(self, s, **kwargs):
        data = s if isinstance(s, bytes) else s.encode()
        if LONG_DIGITS.search(data):
            return json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
        return orjson.loads(data)

    def dumps(self, obj, **kwargs) -> str:
        return rows.encode(obj).decode()

    def response(self, *args, **kwargs):
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(rows.encode(obj), mimetype="application/json")
