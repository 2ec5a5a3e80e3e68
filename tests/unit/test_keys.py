"""Key names: percent-encoded stream tags, one Cluster slot per stream."""

import pytest
from redis.crc import key_slot

from app import keys

IDS = [("agent-1", "orders"), ("a:{b}", "t 100%/é"), ("sim agent:{ü☃}%2F", "orders:{eu}")]


def test_enc_leaves_only_unreserved_characters():
    assert keys.enc("aZ09._~-") == "aZ09._~-"
    assert keys.enc("a:b{c}%d e/é") == "a%3Ab%7Bc%7D%25d%20e%2F%C3%A9"


@pytest.mark.parametrize(("agent", "task"), IDS)
def test_stream_tag_round_trips(agent, task):
    assert keys.parse_stream_tag(keys.stream_tag(agent, task)) == (agent, task)


def test_streams_that_differ_get_different_tags():
    assert keys.stream_tag("a:b", "c") != keys.stream_tag("a", "b:c")
    assert keys.stream_tag("a}", "b") != keys.stream_tag("a", "}b")


@pytest.mark.parametrize(("agent", "task"), IDS)
def test_all_keys_of_a_stream_share_one_cluster_slot(agent, task):
    tag = keys.stream_tag(agent, task)
    names = keys.stream_keys("fusink", tag)
    assert keys.changes_key("fusink", tag) in names
    assert len({key_slot(name.encode()) for name in names}) == 1
    assert keys.checkpoint_key("fusink", keys.stream_tag("agent-1", "orders")) == (
        "fusink:{agent-1:orders}:checkpoint"
    )
