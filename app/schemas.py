"""Every marshmallow schema: request bodies, query strings and responses."""

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from . import rows

STREAM_ID = {"required": True, "validate": validate.Length(min=1, max=256)}


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
    integer in 0..2^63-1, its row-key fields strings or integers.

    Several times faster per event than a nested schema or `List(Dict())`, which
    matters at 10,000 events a batch.
    """

    row_key_fields: tuple[str, ...] = ("id",)
    max_events: int = 10_000

    def __init__(self, **kwargs):
        super().__init__(fields.Dict(), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise self.make_error("invalid")
        if len(value) > self.max_events:
            raise ValidationError(f"At most {self.max_events} events per batch, got {len(value)}.")
        problems = {}
        for position, event in enumerate(value):
            if type(event) is not dict:
                problems[position] = ["Not a valid mapping type."]
                continue
            errors = _event_errors(event, self.row_key_fields)
            if errors:
                problems[position] = errors
        if problems:
            raise ValidationError(problems)
        return value


BAD_KEY = "Row-key field must be a non-empty string or an integer."


def _event_errors(event: dict, row_key_fields: tuple[str, ...]) -> dict | None:
    errors = None
    index = event.get("index")
    if (index is not None or "index" in event) and not rows.is_valid_index(index):
        errors = {"index": [f"Not an integer in 0..{rows.MAX_INDEX}."]}
    for name in row_key_fields:
        value = event.get(name)
        if type(value) is int or (type(value) is str and value):
            continue
        message = "Missing row-key field." if name not in event else BAD_KEY
        errors = errors or {}
        errors[name] = [message]
    return errors


class BatchSchema(Schema):
    """One batch of change events from fuagent."""

    class Meta:
        unknown = EXCLUDE

    agent_id = fields.String(**STREAM_ID)
    task_id = fields.String(**STREAM_ID)
    is_snapshot_end = StrictBoolean(load_default=False)
    snapshot_sync_suggested = StrictBoolean(load_default=False)
    events = EventListField(
        load_default=list,
        metadata={"items": {"$ref": "#/components/schemas/BatchEvent"}},
    )

    def __init__(self, row_key_fields=("id",), max_events=10_000, **kwargs):
        super().__init__(**kwargs)
        events = self.fields["events"]
        events.row_key_fields, events.max_events = row_key_fields, max_events


class IngestResultSchema(Schema):
    """What the sink answers to a batch."""

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


class SyncStatusQuerySchema(Schema):
    """Which stream's checkpoint to read."""

    class Meta:
        unknown = EXCLUDE

    agent_id = fields.String(**STREAM_ID)
    task_id = fields.String(**STREAM_ID)


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


class HealthSchema(Schema):
    """Liveness or readiness."""

    status = fields.String(required=True, metadata={"example": "ok"})
