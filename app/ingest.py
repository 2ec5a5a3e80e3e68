"""The ingest use case: a validated batch -> one Store call -> the agent's answer."""

import time
from collections.abc import Callable
from itertools import repeat
from operator import itemgetter

from . import rows
from .errors import ApiError
from .store import BatchResult, RowKeyConflict, Store


def apply(
    batch: dict, store: Store, key_fields_for: Callable[[str, str], tuple[str, ...]]
) -> BatchResult:
    """Store a batch validated by BatchSchema; return what the agent is told.

    `key_fields_for` gives a stream's row-key fields: the same the schema checked.

    Raises:
        ApiError: 409 when the stream was keyed by other row-key fields; nothing is written.
    """
    agent_id, task_id = batch["agent_id"], batch["task_id"]
    key_fields = key_fields_for(agent_id, task_id)
    columns, max_index, in_order_from = encode_events(batch["events"], key_fields)
    now_ms = time.time_ns() // 1_000_000
    store.list_stream(agent_id, task_id, now_ms)
    try:
        return store.apply_batch(
            agent_id,
            task_id,
            columns,
            str(max_index) if max_index >= 0 else "",
            in_order_from=str(in_order_from) if in_order_from >= 0 else "",
            suggested=batch["snapshot_sync_suggested"],
            snapshot_end=batch["is_snapshot_end"],
            now_ms=now_ms,
            key_fields=key_fields,
        )
    except RowKeyConflict as conflict:
        raise ApiError(
            409,
            f"Stream {agent_id!r}/{task_id!r} is keyed by {', '.join(conflict.recorded)}, "
            f"but ROW_KEY_RULES/ROW_KEY_FIELDS now key it by {', '.join(key_fields)}. "
            "Drop the stream (flask streams drop, or DELETE /streams/{agent_id}/{task_id}) "
            "to re-key it: the agent then starts over.",
        ) from None


def encode_events(events: list, key_fields: tuple[str, ...]) -> tuple[rows.Columns, int, int]:
    """The events' row keys, indexes and compact JSON, the highest index (-1: none),
    and the first index when every event has one and none is below the one before
    it (-1 otherwise), for events validated by BatchSchema.

    This runs for every event at up to hundreds of thousands of events a second, so
    each column is made by `map` over C functions rather than by a Python loop, and
    integers are left for Columns.packed to write out, all in one call.
    """
    if len(key_fields) == 1:
        keys = list(map(itemgetter(key_fields[0]), events))
    else:
        keys = [rows.row_key(event, key_fields) for event in events]
    indexes = list(map(dict.get, events, repeat("index")))
    values = rows.encode_each(events)
    if None in indexes:
        present = [index for index in indexes if index is not None]
        indexes = ["" if index is None else index for index in indexes]
        return rows.Columns(keys, indexes, values), max(present, default=-1), -1
    columns = rows.Columns(keys, indexes, values)
    if not indexes:
        return columns, -1, -1
    if indexes == sorted(indexes):  # fuagent's order: then sorted() is O(n), the max last
        return columns, indexes[-1], indexes[0]
    return columns, max(indexes), -1
