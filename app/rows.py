"""Rows: row keys from ROW_KEY_FIELDS, compact JSON, canonical index strings."""

import json
import secrets

import orjson

MAX_INDEX = 2**63 - 1


def encode(value) -> bytes:
    """Compact JSON, non-ASCII kept as UTF-8; integers beyond 64 bits kept exact."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson refuses integers beyond 64 bits; json does not
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def encode_each(values: list) -> list[bytes]:
    """`[encode(v) for v in values]`, three times faster.

    orjson's fixed cost per call dominates for small rows, so the values are encoded
    in one call, separated by a random marker string, and split apart again. The
    marker's quotes are not preceded by a backslash, so it cannot occur inside a
    string; as a value of its own it would have to be guessed (128 random bits).
    """
    if len(values) < 2:
        return [encode(value) for value in values]
    marker = secrets.token_hex(16)
    mixed = [marker] * (2 * len(values) - 1)
    mixed[::2] = values
    return encode(mixed)[1:-1].split(b',"' + marker.encode() + b'",')


def row_key(event: dict, fields: tuple[str, ...]) -> str:
    """One field: its value as a string; several: the compact JSON array of values."""
    if len(fields) == 1:
        value = event[fields[0]]
        return value if isinstance(value, str) else str(value)
    return encode([event[name] for name in fields]).decode()


def is_valid_index(value) -> bool:
    """An index is a JSON integer (not a float, not a boolean) in 0..2^63-1."""
    return type(value) is int and 0 <= value <= MAX_INDEX
