"""Every marshmallow schema: request bodies, query strings and responses."""

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

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

    Documentation only: events are checked in one pass by `BatchSchema`, which is
    several times faster than a nested schema per event.
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


class BatchSchema(Schema):
    """One batch of change events from fuagent."""

    class Meta:
        unknown = EXCLUDE

    agent_id = fields.String(**STREAM_ID)
    task_id = fields.String(**STREAM_ID)
    is_snapshot_end = StrictBoolean(load_default=False)
    snapshot_sync_suggested = StrictBoolean(load_default=False)
    events = fields.List(
        fields.Dict(),
        load_default=list,
        metadata={"items": {"$ref": "#/components/schemas/BatchEvent"}},
    )

    def __init__(self, row_key_fields=("id",), max_events=10_000, **kwargs):
        super().__init__(**kwargs)
        self.row_key_fields = row_key_fields
        self.max_events = max_events

    @validates("events")
    def validate_events(self, events, **kwargs):
        """Check each event's index and row-key fields, naming its position."""
        if len(events) > self.max_events:
            raise ValidationError(f"At most {self.max_events} events per batch, got {len(events)}.")
        problems = {}
        for position, event in enumerate(events):
            if not isinstance(event, dict):
                continue  # fields.Dict has already reported it
            errors = {}
            if "index" in event and not rows.is_valid_index(event["index"]):
                errors["index"] = [f"Not an integer in 0..{rows.MAX_INDEX}."]
            for name in self.row_key_fields:
                if name not in event:
                    errors[name] = ["Missing row-key field."]
                elif not rows.is_valid_key_value(event[name]):
                    errors[name] = ["Row-key field must be a non-empty string or an integer."]
            if errors:
                problems[position] = errors
        if problems:
            raise ValidationError(problems)


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
