"""The HTTP routes, one blueprint per tag; shared view helpers."""

from flask import request
from marshmallow import Schema, ValidationError

from ..errors import ApiError, flatten_errors


def load_query(schema: Schema) -> dict:
    """The query string loaded by `schema`; 400 naming each bad parameter."""
    try:
        return schema.load(request._get_current_object().args)
    except ValidationError as exc:
        errors = flatten_errors(exc.messages)
        raise ApiError(400, f"Invalid query: {', '.join(sorted(errors))}.", errors=errors) from None
