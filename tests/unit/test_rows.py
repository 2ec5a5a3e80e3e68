"""Row keys, compact JSON and index checks."""

import msgpack
import pytest

from app import ingest, rows
from app.config import RowKeyRule


def test_single_field_key_is_the_value_as_text():
    assert rows.row_key({"id": 101}, ("id",)) == "101"
    assert rows.row_key({"id": "abc"}, ("id",)) == "abc"


def test_composite_key_is_a_compact_json_array():
    assert rows.row_key({"id": 1, "region": "é u"}, ("id", "region")) == '[1,"é u"]'


def test_encode_keeps_integers_beyond_64_bits():
    assert rows.encode({"n": 2**70}) == b'{"n":1180591620717411303424}'


@pytest.mark.parametrize(
    "column, strings",
    [
        ([1, rows.MAX_INDEX, 2**70], [b"1", b"9223372036854775807", b"1180591620717411303424"]),
        (["é", "0012"], ["é".encode(), b"0012"]),
        ([7, "", "x"], [b"7", b"", b"x"]),
        ([], []),
    ],
)
def test_packed_columns_are_one_array_of_strings(column, strings):
    values = [b'{"id":1}'] * len(column)
    packed = rows.Columns(column, column, values).packed()
    assert msgpack.unpackb(packed, raw=True) == strings + strings + values


@pytest.mark.parametrize("value", [0, 1, rows.MAX_INDEX])
def test_valid_indexes(value):
    assert rows.is_valid_index(value)


@pytest.mark.parametrize("value", [-1, rows.MAX_INDEX + 1, 1.0, True, "1", None])
def test_invalid_indexes(value):
    assert not rows.is_valid_index(value)


def test_encode_events_gives_the_columns_and_the_highest_index():
    events = [{"id": 2, "index": 9}, {"id": "x"}, {"id": 3, "index": 4}]
    columns, highest, in_order_from = ingest.encode_events(events, ("id",))
    assert columns == (
        [2, "x", 3],
        [9, "", 4],
        [b'{"id":2,"index":9}', b'{"id":"x"}', b'{"id":3,"index":4}'],
    )
    assert (highest, in_order_from) == (9, -1)
    assert ingest.encode_events([{"id": 1}], ("id",)) == (([1], [""], [b'{"id":1}']), -1, -1)
    assert ingest.encode_events([], ("id",)) == (([], [], []), -1, -1)


@pytest.mark.parametrize(
    "indexes, highest, in_order_from",
    [
        ([7], 7, 7),
        ([3, 5, 5, 8], 8, 3),  # equal neighbours are in order
        ([3, 8, 5], 8, -1),
        ([9, 3], 9, -1),
        ([3, None, 8], 8, -1),  # an event without an index
    ],
)
def test_encode_events_gives_the_first_index_of_a_batch_in_index_order(
    indexes, highest, in_order_from
):
    events = [
        {"id": n} if index is None else {"id": n, "index": index} for n, index in enumerate(indexes)
    ]
    assert ingest.encode_events(events, ("id",))[1:] == (highest, in_order_from)


def test_encode_events_keys_rows_by_several_fields():
    events = [{"a": 1, "b": "x", "index": 5}, {"a": 2, "b": "y", "index": 7}]
    columns, highest, _ = ingest.encode_events(events, ("a", "b"))
    assert columns.keys == ['[1,"x"]', '[2,"y"]']
    assert columns.indexes == [5, 7]
    assert highest == 7


@pytest.mark.parametrize(
    "values",
    [
        [],
        [{"a": 1}],
        [{"a": 1}, {"b": [1, 2]}, {}],
        [{"s": '","'}, {"s": '\\",'}, {"n": None}],
        [{"big": 2**70}, {"a": "é"}],
    ],
)
def test_encode_each_equals_encoding_one_by_one(values):
    assert rows.encode_each(values) == [rows.encode(v) for v in values]


RULES = (
    RowKeyRule(fields=("order_id",), task="mysql-orders*"),
    RowKeyRule(fields=("order_id", "line_no"), agent="agent-eu-*", task="*items*"),
    RowKeyRule(fields=("sku",), agent="agent-eu-*"),
)


@pytest.mark.parametrize(
    ("agent_id", "task_id", "fields"),
    [
        ("agent-us-1", "mysql-orders", ("order_id",)),
        ("agent-eu-1", "mysql-orders-2", ("order_id",)),  # the first match wins
        ("agent-eu-1", "pg-order-items", ("order_id", "line_no")),
        ("agent-eu-1", "products", ("sku",)),  # no task glob: any task
        ("agent-us-1", "pg-order-items", ("id",)),  # no match: ROW_KEY_FIELDS
        ("agent-us-1", "MYSQL-ORDERS", ("id",)),  # globs are case-sensitive
    ],
)
def test_first_matching_rule_gives_the_row_key_fields(agent_id, task_id, fields):
    assert rows.key_fields_resolver(RULES, ("id",))(agent_id, task_id) == fields


def test_row_key_fields_are_resolved_once_per_stream():
    resolve = rows.key_fields_resolver(RULES, ("id",))
    for _ in range(3):
        resolve("agent-eu-1", "pg-order-items")
    resolve("agent-us-1", "users")
    info = resolve.cache_info()
    assert (info.misses, info.hits, info.maxsize) == (2, 2, rows.MAX_CACHED_STREAMS)


def test_encode_each_splits_right_when_a_value_holds_the_marker(monkeypatch):
    monkeypatch.setattr(rows, "getrandbits", lambda bits: 0xBAD)  # the marker: 0...0bad
    values = [{"a": 1}, {"tags": ["x", "0000000000000bad", "y"]}, {"b": 2}]
    assert rows.encode_each(values) == [rows.encode(v) for v in values]
