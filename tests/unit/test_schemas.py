"""The request path's short cuts in schemas.py give exactly what marshmallow gives."""

import pytest
from marshmallow import Schema, ValidationError, fields
from werkzeug.datastructures import MultiDict

from app import rows
from app.schemas import (
    BatchSchema,
    IngestResultSchema,
    SyncStatusQuerySchema,
    _all_valid,
    _event_errors,
)
from app.store import BatchResult

EVENT = {"id": 1, "index": 5, "name": "x"}
VALID_BATCHES = [
    {"agent_id": "a", "task_id": "t", "events": [EVENT]},
    {"agent_id": "a", "task_id": "t"},
    {"agent_id": "a" * 256, "task_id": "t", "is_snapshot_end": True, "extra": 1},
    {"agent_id": "a", "task_id": "t", "snapshot_sync_suggested": True, "events": []},
    {"agent_id": "é", "task_id": "t", "events": [EVENT, {"id": "k"}]},
]
INVALID_BATCHES = [
    [],
    {"task_id": "t"},
    {"agent_id": "", "task_id": "t"},
    {"agent_id": "a" * 257, "task_id": "t"},
    {"agent_id": 7, "task_id": "t"},
    {"agent_id": "a", "task_id": None},
    {"agent_id": "a", "task_id": "t", "is_snapshot_end": 1},
    {"agent_id": "a", "task_id": "t", "snapshot_sync_suggested": "true"},
    {"agent_id": "a", "task_id": "t", "events": None},
    {"agent_id": "a", "task_id": "t", "events": {"id": 1}},
    {"agent_id": "a", "task_id": "t", "events": [{"id": 1, "index": -1}]},
    {"agent_id": "a", "task_id": "t", "events": [{"index": 1}]},
]


def marshmallow_load(schema, data):
    return Schema.load(schema, data)


@pytest.mark.parametrize("body", VALID_BATCHES)
def test_valid_batch_loads_as_marshmallow_loads_it(body):
    schema = BatchSchema()
    assert schema._load_valid(body) is not None
    assert schema.load(body) == marshmallow_load(schema, body)


@pytest.mark.parametrize("body", INVALID_BATCHES)
def test_invalid_batch_fails_as_marshmallow_fails(body):
    schema = BatchSchema()
    assert schema._load_valid(body) is None
    with pytest.raises(ValidationError) as ours:
        schema.load(body)
    with pytest.raises(ValidationError) as theirs:
        marshmallow_load(schema, body)
    assert ours.value.messages == theirs.value.messages


def each_valid(events: list, key_fields: tuple[str, ...]) -> bool:
    return all(type(event) is dict and not _event_errors(event, key_fields) for event in events)


PASSING_EVENTS = [
    ([], ("id",)),
    ([{"id": 1, "index": 0}, {"id": "k", "index": rows.MAX_INDEX}], ("id",)),
    ([{"a": 1, "b": "x", "index": 3}], ("a", "b")),
]
FAILING_EVENTS = [
    ([{"id": 1, "index": True}], ("id",)),
    ([{"id": 1, "index": 1.0}], ("id",)),
    ([{"id": 1, "index": -1}], ("id",)),
    ([{"id": 1, "index": rows.MAX_INDEX + 1}], ("id",)),
    ([{"id": 1, "index": None}], ("id",)),
    ([{"id": True, "index": 1}], ("id",)),
    ([{"id": "", "index": 1}], ("id",)),
    ([{"id": None, "index": 1}], ("id",)),
    ([{"id": 1.5, "index": 1}], ("id",)),
    ([{"index": 1}], ("id",)),
    ([{"id": 1, "index": 1}, [1]], ("id",)),
    ([{"id": 1, "index": 1}, {"id": 2, "index": "2"}], ("id",)),
    ([{"a": 1, "index": 3}], ("a", "b")),
]


@pytest.mark.parametrize(("events", "key_fields"), PASSING_EVENTS)
def test_the_one_pass_check_passes_valid_events(events, key_fields):
    assert each_valid(events, key_fields)
    assert _all_valid(events, key_fields)


@pytest.mark.parametrize(("events", "key_fields"), FAILING_EVENTS)
def test_the_one_pass_check_leaves_invalid_events_to_the_loop(events, key_fields):
    assert not each_valid(events, key_fields)
    assert not _all_valid(events, key_fields)


def test_events_without_an_index_take_the_loop_and_are_valid():
    events = [{"id": 1}, {"id": 2, "index": 4}]
    assert not _all_valid(events, ("id",))
    assert (
        BatchSchema().load({"agent_id": "a", "task_id": "t", "events": events})["events"] == events
    )


def test_a_field_added_to_the_batch_turns_the_short_cut_off():
    class Wider(BatchSchema):
        source = fields.String(required=True)

    with pytest.raises(ValidationError) as caught:
        Wider().load(VALID_BATCHES[0])
    assert "source" in caught.value.messages


@pytest.mark.parametrize(
    "args",
    [
        {"agent_id": "a", "task_id": "t"},
        {"agent_id": "a", "task_id": "t", "other": "x"},
        {"agent_id": "a"},
        {"agent_id": "", "task_id": "t"},
        {"agent_id": "a", "task_id": "t" * 257},
    ],
)
def test_status_query_loads_as_marshmallow_loads_it(args):
    schema, query = SyncStatusQuerySchema(), MultiDict(args)
    try:
        expected = marshmallow_load(schema, query)
    except ValidationError as exc:
        with pytest.raises(ValidationError) as caught:
            schema.load(query)
        assert caught.value.messages == exc.messages
    else:
        assert schema.load(query) == expected


@pytest.mark.parametrize(
    "result",
    [BatchResult(7, False, 1, 0), BatchResult(None, True, 0, 3, "pruning", True)],
)
def test_ingest_result_dumps_as_marshmallow_dumps_it(result):
    schema = IngestResultSchema()
    assert schema.dump(result) == Schema.dump(schema, result)
