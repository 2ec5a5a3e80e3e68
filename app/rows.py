"""Rows: each stream's row-key fields, row keys, compact JSON, canonical index strings,
and a batch's columns packed for the ingest script."""

import functools
import json
import re
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from random import getrandbits
from typing import NamedTuple

import msgpack
import orjson

from .config import RowKeyRule

MAX_INDEX = 2**63 - 1
MAX_CACHED_STREAMS = 10_000  # streams whose row-key fields a process remembers
# A row's JSON that ends with its top-level "index" member, as fuagent's events do
# (ingest_batch.lua writes no row meta for such a row). Only a top-level member can
# end the JSON this way: inside a string, every quote is escaped.
TRAILING_INDEX = re.compile(r'[{,]"index":([0-9]+)\}\Z')
TRAILING_INDEX_CHARS = 30  # the longest such ending: ,"index": then 19 digits and }


class Columns(NamedTuple):
    """A batch's events as the ingest script takes them: one sequence per column, in
    event order; the script gets all three in one argument (`packed`)."""

    keys: Sequence[str | int] = ()  # row keys (an integer stands for its decimal digits)
    indexes: Sequence[int | str] = ()  # '' where an event has none
    values: Sequence[bytes] = ()  # the rows' compact JSON

    def packed(self) -> bytes:
        """The keys, then the indexes, then the values, as one MessagePack array of
        strings: the ingest script's one argument for them, unpacked by Redis's
        `cmsgpack`. Packed in a few calls in C, where hiredis spent about 0.13 µs on
        each of three arguments per event, a fifth of a worker's CPU per event.

        Integers go as their decimal digits (Lua numbers are doubles), strings in
        MessagePack's raw format (Redis's cmsgpack reads no bin format).
        """
        return msgpack.packb(
            [*as_strings(self.keys), *as_strings(self.indexes), *self.values],
            use_bin_type=False,
        )


def as_strings(column: Sequence[str | int]) -> Sequence[str | bytes]:
    """The column with each integer as its decimal digits; a column of integers
    is written out by one orjson call."""
    types = set(map(type, column))
    if types == {int}:
        try:
            return orjson.dumps(column)[1:-1].split(b",")
        except TypeError:  # an integer beyond 64 bits
            pass
    elif types <= {str}:
        return column
    return [str(value) if type(value) is int else value for value in column]


def key_fields_resolver(
    rules: tuple[RowKeyRule, ...], default: tuple[str, ...]
) -> Callable[[str, str], tuple[str, ...]]:
    """(agent_id, task_id) -> the stream's row-key fields: the first matching rule's,
    else `default`.

    The answer is cached per stream, so the globs are matched once per stream and
    process rather than once per batch.
    """
    if not rules:
        return lambda agent_id, task_id: default

    @functools.lru_cache(maxsize=MAX_CACHED_STREAMS)
    def resolve(agent_id: str, task_id: str) -> tuple[str, ...]:
        for rule in rules:
            if (rule.agent is None or fnmatchcase(agent_id, rule.agent)) and (
                rule.task is None or fnmatchcase(task_id, rule.task)
            ):
                return rule.fields
        return default

    return resolve


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
    string; only a string equal to the marker inside a value's own array could, and
    that split yields one part too many: such values are encoded one by one. The
    marker is short, as bytes.split slows down with the length of what it looks for.
    """
    if len(values) < 2:
        return [encode(value) for value in values]
    marker = f"{getrandbits(64):016x}"  # the process's generator: no system call
    mixed = [marker] * (2 * len(values) - 1)
    mixed[::2] = values
    parts = encode(mixed)[1:-1].split(b',"' + marker.encode() + b'",')
    if len(parts) != len(values):
        return [encode(value) for value in values]
    return parts


def row_key(event: dict, fields: tuple[str, ...]) -> str:
    """One field: its value as a string; several: the compact JSON array of values."""
    if len(fields) == 1:
        value = event[fields[0]]
        return value if isinstance(value, str) else str(value)
    return encode([event[name] for name in fields]).decode()


def stored_index(row: str, meta: str | None) -> str:
    """A stored row's index: the one its JSON ends with, else its row meta's ('' when
    its event had none). Row meta may be stale for a row whose JSON ends with one."""
    found = TRAILING_INDEX.search(row, max(0, len(row) - TRAILING_INDEX_CHARS))
    if found:
        return found.group(1)
    return (meta or "").partition(":")[0]


def is_valid_index(value) -> bool:
    """An index is a JSON integer (not a float, not a boolean) in 0..2^63-1."""
    return type(value) is int and 0 <= value <= MAX_INDEX
