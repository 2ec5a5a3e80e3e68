"""Row keys, compact JSON and index checks."""

import pytest

from app import ingest, rows


def test_single_field_key_is_the_value_as_text():
    assert rows.row_key({"id": 101}, ("id",)) == "101"
    assert rows.row_key({"id": "abc"}, ("id",)) == "abc"


def test_composite_key_is_a_compact_json_array():
    assert rows.row_key({"id": 1, "region": "é u"}, ("id", "region")) == '[1,"é u"]'


def test_encode_keeps_integers_beyond_64_bits():
    assert rows.encode({"n": 2**70}) == b'{"n":1180591620717411303424}'


@pytest.mark.parametrize("value", [0, 1, rows.MAX_INDEX])
def test_valid_indexes(value):
    assert rows.is_valid_index(value)


@pytest.mark.parametrize("value", [-1, rows.MAX_INDEX + 1, 1.0, True, "1", None])
def test_invalid_indexes(value):
    assert not rows.is_valid_index(value)


def test_encode_events_gives_triples_and_the_highest_index():
    events = [{"id": 2, "index": 9}, {"id": "x"}, {"id": 3, "index": 4}]
    triples, highest = ingest.encode_events(events, ("id",))
    assert triples == [
        "2", "9", b'{"id":2,"index":9}',
        "x", "", b'{"id":"x"}',
        "3", "4", b'{"id":3,"index":4}',
    ]  # fmt: skip
    assert highest == 9
    assert ingest.encode_events([{"id": 1}], ("id",)) == (["1", "", b'{"id":1}'], -1)


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
