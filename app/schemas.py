"""Every marshmallow schema: request bodies, query strings and responses."""

import json
import re
from operator import itemgetter

from marshmallow import EXCLUDE, INCLUDE, Schema, ValidationError, fields, pre_dump, validate
from marshmallow.decorators import POST_LOAD, PRE_LOAD, VALIDATES, VALIDATES_SCHEMA

from . import keys, rows

MAX_STREAM_ID = 256
STREAM_ID = {"required": True, "validate": validate.Length(min=1, max=MAX_STREAM_ID)}
LOAD_HOOKS = (PRE_LOAD, POST_LOAD, VALIDATES, VALIDATES_SCHEMA)


def _stream_ids(data) -> tuple[str, str] | None:
    """(agent_id, task_id) when both are valid stream ids, else None."""
    agent_id, task_id = data.get("agent_id"), data.get("task_id")
    if (
        type(agent_id) is str
        and type(task_id) is str
        and 0 < len(agent_id) <= MAX_STREAM_ID
        and 0 < len(task_id) <= MAX_STREAM_ID
    ):
        return agent_id, task_id
    return None


class FastLoadSchema(Schema):
    """A schema whose load() takes a short cut for valid input on the request path.

    marshmallow's load costs tens of microseconds even for a small body, a large
    share of a one-event request. `_load_valid` returns exactly what load() would
    for input it can vouch for, and None otherwise; marshmallow then loads it and
    names every problem. The short cut is off when fields or load hooks differ
    from the ones it was written for.
    """

    fast_fields: tuple[str, ...] = ()

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._fast = tuple(self.load_fields) == self.fast_fields and not any(
            self._hooks[hook] for hook in LOAD_HOOKS
        )

    def load(self, data, **kwargs):
        if self._fast and not kwargs:
            loaded = self._load_valid(data)
            if loaded is not None:
                return loaded
        return super().load(data, **kwargs)

    def _load_valid(self, data) -> dict | None:
        raise NotImplementedError


class StrictBoolean(fields.Boolean):
    """A JSON true or false; not 1, 0 or a string."""

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not bool:
            raise self.make_error("invalid", input=value)
        return value


class BatchEventSchema(Schema):
    """A raw source row; only `index` and the row-key fields have meaning to fusink.

    Documentation only: `EventListField` checks events in one pass.
    """

    class Meta:
        unknown = EXCLUDE

    index = fields.Integer(
        strict=True,
        metadata={
            "format": "int64",
            "minimum": 0,
            "maximum": rows.MAX_INDEX,
            "description": "Position of the event in the source stream.",
        },
    )


class EventListField(fields.List):
    """Events, checked in one pass over the list: each is an object, its `index` an
    integer in 0..2^63-1, its stream's row-key fields strings or integers.

    Several times faster per event than a nested schema or `List(Dict())`, which
    matters at 10,000 events a batch.
    """

    max_events: int = 10_000
    key_fields_for = staticmethod(rows.key_fields_resolver((), ("id",)))

    def __init__(self, **kwargs):
        super().__init__(fields.Dict(), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise self.make_error("invalid")
        if len(value) > self.max_events:
            raise ValidationError(f"At most {self.max_events} events per batch, got {len(value)}.")
        agent_id, task_id = data.get("agent_id"), data.get("task_id")
        # The row key depends on the stream; with a bad id only the ids' errors count.
        key_fields = ()
        if type(agent_id) is str and type(task_id) is str:
            key_fields = self.key_fields_for(agent_id, task_id)
        if len(value) >= ONE_PASS_MIN_EVENTS and _all_valid(value, key_fields):
            return value
        problems = {}
        for position, event in enumerate(value):
            if type(event) is not dict:
                problems[position] = ["Not a valid mapping type."]
                continue
            errors = _event_errors(event, key_fields)
            if errors:
                problems[position] = errors
        if problems:
            raise ValidationError(problems)
        return value


BAD_KEY = "Row-key field must be a non-empty string or an integer"
ONE_PASS_MIN_EVENTS = 8  # below this, checking event by event costs less


def _all_valid(events: list, row_key_fields: tuple[str, ...]) -> bool:
    """True when every event is an object with a valid `index` and valid row-key
    fields; False when any might not be (then `_event_errors` looks at each).

    Each check is one pass of C functions over the batch (`map`, `set`, `min`), a
    fraction of a Python loop's cost per event. Events without an index, rare from
    fuagent, take the loop.
    """
    if not events:
        return True
    if set(map(type, events)) != {dict}:
        return False
    try:
        indexes = list(map(itemgetter("index"), events))
        if set(map(type, indexes)) != {int} or min(indexes) < 0 or max(indexes) > rows.MAX_INDEX:
            return False
        for name in row_key_fields:
            values = list(map(itemgetter(name), events))
            types = set(map(type, values))
            if not types <= {int, str} or (str in types and "" in values):
                return False
    except KeyError:
        return False
    return True


def _event_errors(event: dict, row_key_fields: tuple[str, ...]) -> dict | None:
    errors = None
    index = event.get("index")
    if (index is not None or "index" in event) and not rows.is_valid_index(index):
        errors = {"index": [f"Not an integer in 0..{rows.MAX_INDEX}."]}
    for name in row_key_fields:
        value = event.get(name)
        if type(value) is int or (type(value) is str and value):
            continue
        problem = "Missing row-key field" if name not in event else BAD_KEY
        errors = errors or {}
        errors[name] = [f"{problem}; this stream's rows are keyed by {', '.join(row_key_fields)}."]
    return errors


class BatchSchema(FastLoadSchema):
    """One batch of change events from fuagent."""

    class Meta:
        unknown = EXCLUDE

    agent_id = fields.String(**STREAM_ID)
    task_id = fields.String(**STREAM_ID)
    is_snapshot_end = StrictBoolean(load_default=False)
    snapshot_sync_suggested = StrictBoolean(load_default=False)
    events = EventListField(
        load_default=list,
    )

    fast_fields = ("agent_id", "task_id", "is_snapshot_end", "snapshot_sync_suggested", "events")

    def __init__(self, key_fields_for=None, max_events=10_000, **kwargs):
        """`key_fields_for(agent_id, task_id)` gives a stream's row-key fields (rows.py)."""
        super().__init__(**kwargs)
        events = self.fields["events"]
        if key_fields_for is not None:
            events.key_fields_for = key_fields_for
        events.max_events = max_events

    def _load_valid(self, data) -> dict | None:
        if type(data) is not dict or (ids := _stream_ids(data)) is None:
            return None
        is_end = data.get("is_snapshot_end", False)
        suggested = data.get("snapshot_sync_suggested", False)
        if type(is_end) is not bool or type(suggested) is not bool:
            return None
        events = data.get("events", [])
        try:
            events = self.fields["events"]._deserialize(events, "events", data)
        except ValidationError:
            return None
        return {
            "agent_id": ids[0],
            "task_id": ids[1],
            "is_snapshot_end": is_end,
            "snapshot_sync_suggested": suggested,
            "events": events,
        }


RESULT_FIELDS = ("snapshot_needed", "checkpoint", "rows_written", "rows_skipped")


class IngestResultSchema(Schema):
    """What the sink answers to a batch."""

    def dump(self, obj, **kwargs):
        # The request path's answer, as marshmallow would dump a BatchResult.
        if kwargs or tuple(self.dump_fields) != RESULT_FIELDS:
            return super().dump(obj, **kwargs)
        return {
            "snapshot_needed": bool(obj.snapshot_needed),
            "checkpoint": None if obj.checkpoint is None else int(obj.checkpoint),
            "rows_written": int(obj.rows_written),
            "rows_skipped": int(obj.rows_skipped),
        }

    snapshot_needed = fields.Boolean(
        required=True,
        metadata={"description": "True: the agent must start a full snapshot."},
    )
    checkpoint = fields.Integer(
        allow_none=True,
        metadata={"format": "int64", "description": "The stream's checkpoint after it."},
    )
    rows_written = fields.Integer(metadata={"description": "Rows stored by this batch."})
    rows_skipped = fields.Integer(
        metadata={"description": "Events older than the stored row, left out."}
    )


class SyncStatusQuerySchema(FastLoadSchema):
    """Which stream's checkpoint to read."""

    class Meta:
        unknown = EXCLUDE

    agent_id = fields.String(**STREAM_ID)
    task_id = fields.String(**STREAM_ID)

    fast_fields = ("agent_id", "task_id")

    def _load_valid(self, data) -> dict | None:
        ids = _stream_ids(data) if hasattr(data, "get") else None
        return None if ids is None else {"agent_id": ids[0], "task_id": ids[1]}


class SyncStatusSchema(Schema):
    """A stream's checkpoint: the highest index stored."""

    index = fields.Integer(required=True, metadata={"format": "int64", "minimum": 0})


class ApiErrorSchema(Schema):
    """Every error fusink answers."""

    code = fields.Integer(required=True, metadata={"description": "The HTTP status."})
    status = fields.String(required=True, metadata={"description": "Its reason phrase."})
    message = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Messages by field path, e.g. events.17.index."},
    )
    request_id = fields.String()
    oldest_id = fields.String(
        allow_none=True,
        metadata={
            "description": "410 from listChanges: the oldest change feed entry kept "
            "(null when the feed is empty)."
        },
    )


class HealthSchema(Schema):
    """Liveness or readiness."""

    status = fields.String(required=True, metadata={"example": "ok"})


MS = {"format": "int64", "description": "Milliseconds since the epoch."}
INDEX = {"format": "int64", "minimum": 0}


class StreamListQuerySchema(Schema):
    """Which page of streams to list."""

    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(
        load_default=100, validate=validate.Range(1, 1000), metadata={"example": 100}
    )
    cursor = fields.String(metadata={"description": "`next_cursor` of the previous page."})


class RowListQuerySchema(StreamListQuerySchema):
    """Which page of a stream's rows to list."""


class StreamViewQuerySchema(RowListQuerySchema):
    """Which stream to show, and which page of its rows."""

    agent_id = fields.String(**STREAM_ID)
    task_id = fields.String(**STREAM_ID)


class StreamSnapshotSchema(Schema):
    """A stream's snapshot state, read from its checkpoint hash."""

    state = fields.String(
        attribute="snapshot_state",
        dump_default="none",
        metadata={
            "enum": ["none", "requested", "running", "pruning", "completed"],
            "description": "pruning: the snapshot ended and rows it did not send are "
            "being deleted.",
        },
    )
    generation = fields.Integer(
        attribute="snapshot_generation",
        dump_default=0,
        metadata={"description": "Grows by one with each snapshot started."},
    )
    requested_at = fields.Integer(attribute="snapshot_requested_at", metadata=MS)
    suggested_at = fields.Integer(attribute="snapshot_suggested_at", metadata=MS)
    started_at = fields.Integer(attribute="snapshot_started_at", metadata=MS)
    started_index = fields.Integer(
        attribute="snapshot_started_index",
        metadata={**INDEX, "description": "The checkpoint when the snapshot began."},
    )
    end_at = fields.Integer(
        attribute="snapshot_end_at",
        metadata={**MS, "description": "The last is_snapshot_end batch (ms since the epoch)."},
    )
    completed_at = fields.Integer(attribute="snapshot_completed_at", metadata=MS)
    rows_seen = fields.Integer(
        attribute="snapshot_rows_seen", metadata={"description": "Rows left after its prune."}
    )
    rows_pruned = fields.Integer(
        attribute="snapshot_rows_pruned", metadata={"description": "Rows its prune deleted."}
    )
    prune_deleted = fields.Integer(
        metadata={"description": "Rows deleted so far by the prune under way."}
    )
    prune_floor = fields.Integer(
        metadata={
            **INDEX,
            "description": "An event for an absent row at or below this index is a "
            "pre-snapshot image of a pruned row and is left out.",
        }
    )
    deferred = fields.Boolean(
        attribute="snapshot_deferred",
        dump_default=False,
        metadata={"description": "A snapshot was asked for during the prune; it follows it."},
    )


class StreamSchema(Schema):
    """One stream: its checkpoint, counters, last update and snapshot state."""

    agent_id = fields.String(required=True)
    task_id = fields.String(required=True)
    tag = fields.String(
        required=True,
        metadata={"description": "The Redis Cluster hash tag in each of its key names."},
    )
    checkpoint = fields.Integer(
        attribute="index", allow_none=True, dump_default=None, metadata=INDEX
    )
    updated_at = fields.Integer(metadata=MS)
    events = fields.Integer(dump_default=0)
    batches = fields.Integer(dump_default=0)
    rows = fields.Integer(dump_default=0, metadata={"description": "Rows stored."})
    row_key_fields = fields.List(
        fields.String(),
        allow_none=True,
        dump_default=None,
        metadata={
            "description": "The event fields its rows are keyed by, recorded by its first "
            "batch; null until a batch records them. A batch keyed otherwise is refused (409)."
        },
    )
    snapshot = fields.Nested(StreamSnapshotSchema, required=True)

    @pre_dump
    def from_checkpoint_hash(self, stream: dict, **kwargs) -> dict:
        """Store.get_stream()'s flat hash -> this shape; the ids come from the tag."""
        # An empty field (snapshot_started_index of a stream without a checkpoint) is unset.
        stream = {name: value for name, value in stream.items() if value != ""}
        if "row_key_fields" in stream:
            stream["row_key_fields"] = json.loads(stream["row_key_fields"])
        agent_id, task_id = keys.parse_stream_tag(stream["tag"])
        snapshot = {**stream, "snapshot_deferred": "snapshot_deferred" in stream}
        return {**stream, "agent_id": agent_id, "task_id": task_id, "snapshot": snapshot}


NEXT_CURSOR = {
    "allow_none": True,
    "required": True,
    "metadata": {"description": "Pass as `cursor` for the next page; null on the last."},
}


class StreamPageSchema(Schema):
    """A page of streams, most recently updated first."""

    streams = fields.List(fields.Nested(StreamSchema), required=True)
    next_cursor = fields.String(**NEXT_CURSOR)


class RowSchema(Schema):
    """A row as stored: the latest event for its row key, verbatim."""

    class Meta:
        unknown = INCLUDE


class RowEntrySchema(Schema):
    """One row of a stream, with its key and index."""

    key = fields.String(required=True)
    index = fields.Integer(allow_none=True, required=True, metadata=INDEX)
    row = fields.Nested(RowSchema, required=True)


class RowPageSchema(Schema):
    """A page of a stream's rows, in Redis HSCAN order."""

    rows = fields.List(fields.Nested(RowEntrySchema), required=True)
    next_cursor = fields.String(**NEXT_CURSOR)


class DroppedStreamSchema(Schema):
    """What deleting a stream removed."""

    agent_id = fields.String(required=True)
    task_id = fields.String(required=True)
    rows_deleted = fields.Integer(required=True)


# `$`, or a Redis Stream entry id `ms-seq`; 19 digits keep each part below 2^64.
CURSOR = re.compile(r"\$|[0-9]{1,19}-[0-9]{1,19}")


def _check_cursor(value: str) -> None:
    if not CURSOR.fullmatch(value):  # fullmatch: `$` would let a final newline in
        raise ValidationError("Not an entry id such as 1700000000000-0, nor $.")


class ChangeListQuerySchema(Schema):
    """Which entries of a stream's change feed to read."""

    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(
        load_default=100, validate=validate.Range(1, 1000), metadata={"example": 100}
    )
    after = fields.String(
        validate=_check_cursor,
        metadata={
            "description": "The entry id to read after: `next_cursor` of the previous "
            "page, `0-0` for the very first entry, `$` for none (only `next_cursor`, the "
            "feed's last id). Omitted: from the oldest entry kept.",
            "example": "1700000000000-0",
            "pattern": f"^({CURSOR.pattern})$",
        },
    )


class ChangeSchema(Schema):
    """One change feed entry: a row written (upsert) or deleted by a snapshot's prune."""

    id = fields.String(
        required=True, metadata={"description": "The Redis Stream entry id, `ms-seq`."}
    )
    op = fields.String(required=True, metadata={"enum": ["upsert", "delete"]})
    key = fields.String(required=True, metadata={"description": "The row key."})
    index = fields.Integer(
        allow_none=True,
        required=True,
        metadata={
            **INDEX,
            "description": "upsert: the event's index (null when it had none); delete: "
            "the index of the row deleted.",
        },
    )
    row = fields.Nested(
        RowSchema, metadata={"description": "upsert only: the row as stored, verbatim."}
    )


class ChangePageSchema(Schema):
    """A page of a stream's change feed, oldest entry first."""

    changes = fields.List(fields.Nested(ChangeSchema), required=True)
    next_cursor = fields.String(
        required=True,
        metadata={
            "description": "Pass as `after` for the entries that follow; never null: "
            "a feed has no last page."
        },
    )
