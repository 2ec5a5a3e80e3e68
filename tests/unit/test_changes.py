"""The change feed (CHANGE_FEED_MAXLEN) on fakeredis running the real Lua scripts."""

import random

import pytest

from app.config import Credential
from tests.conftest import rows_from_feed

FEED = "fusink:{agent-1:orders}:changes"
ROWS = "fusink:{agent-1:orders}:rows"
CHANGES = "/streams/agent-1/orders/changes"
READER = {"x-api-key": "k1"}


@pytest.fixture
def feeder(make_agent):
    """An agent posting to an app with the change feed on."""
    return make_agent(change_feed_maxlen=10_000)


def read(agent, **query):
    return agent.client.get(CHANGES, query_string=query, headers=READER)


def entries(redis):
    return [entry for _, entry in redis.xrange(FEED)]


def test_feed_is_off_by_default(agent, redis):
    agent.send({"id": 1, "index": 1})
    assert not redis.exists(FEED)
    reply = read(agent)
    assert (reply.status_code, reply.get_json()) == (200, {"changes": [], "next_cursor": "0-0"})
    assert "changes_added" not in redis.hgetall("fusink:{agent-1:orders}:checkpoint")


def test_each_written_row_is_appended_in_event_order(feeder, redis):
    feeder.send({"id": 1, "v": "a", "index": 5}, {"id": 2, "index": 6}, {"id": 1, "v": "b"})
    assert entries(redis) == [
        {"op": "upsert", "key": "1", "index": "5", "row": '{"id":1,"v":"a","index":5}'},
        {"op": "upsert", "key": "2", "index": "6", "row": '{"id":2,"index":6}'},
        {"op": "upsert", "key": "1", "index": "", "row": '{"id":1,"v":"b"}'},
    ]


def test_skipped_and_replayed_events_append_nothing(feeder, redis):
    first = [{"id": 1, "v": "new", "index": 9}, {"id": 2}, {"id": 3, "index": 4}]
    feeder.send(*first)
    assert redis.xlen(FEED) == 3
    assert feeder.send({"id": 1, "v": "old", "index": 8})["rows_skipped"] == 1
    feeder.send(*first)  # a replay: every row is written again, as it was
    assert redis.xlen(FEED) == 3


def test_a_batch_in_index_order_appends_each_change_once(feeder, redis):
    feeder.send({"id": 1, "v": "a", "index": 5})
    same = {"id": 1, "v": "b", "index": 6}
    feeder.send(same, same, {"id": 2, "index": 7})  # above every stored index, in order
    assert [(entry["key"], entry["index"]) for entry in entries(redis)] == [
        ("1", "5"),
        ("1", "6"),
        ("2", "7"),
    ]


def test_a_same_index_image_that_differs_is_appended(feeder, redis):
    feeder.send({"id": 1, "v": "a", "index": 5})
    feeder.send({"id": 1, "v": "b", "index": 5})
    assert [e["row"] for e in entries(redis)] == [
        '{"id":1,"v":"a","index":5}',
        '{"id":1,"v":"b","index":5}',
    ]


def test_feed_matches_the_rows_after_shuffled_and_replayed_batches(feeder, redis):
    rng = random.Random(11)
    batches = []
    for _ in range(60):
        events = []
        for _ in range(rng.randint(1, 8)):
            event = {"id": rng.randint(1, 15), "v": rng.randint(0, 3)}
            if rng.random() < 0.8:
                event["index"] = rng.randint(1, 40)
            events.append(event)
        batches.append(events)
    sent = batches + rng.sample(batches, 20)
    rng.shuffle(sent)
    skipped = 0
    for events in sent:
        skipped += feeder.send(*events)["rows_skipped"]
    assert skipped > 0
    assert rows_from_feed(redis, FEED) == redis.hgetall(ROWS)
    # Every entry changed its row: none repeats the row's previous image.
    previous = {}
    for entry in entries(redis):
        assert previous.get(entry["key"]) != entry["row"]
        previous[entry["key"]] = entry["row"]
    added = redis.hget("fusink:{agent-1:orders}:checkpoint", "changes_added")
    assert int(added) == redis.xlen(FEED)


def test_prune_deletions_are_appended_as_deletes(feeder, redis):
    feeder.send(*({"id": n, "index": n} for n in range(1, 6)))
    assert feeder.send(snapshot_sync_suggested=True)["snapshot_needed"] is True
    feeder.send(*({"id": n, "v": "snap", "index": 10} for n in (1, 2)))
    feeder.send(is_snapshot_end=True)
    assert sorted(redis.hkeys(ROWS)) == ["1", "2"]
    deletes = [e for e in entries(redis) if e["op"] == "delete"]
    assert sorted(deletes, key=lambda e: e["key"]) == [
        {"op": "delete", "key": str(n), "index": str(n)} for n in (3, 4, 5)
    ]
    assert rows_from_feed(redis, FEED) == redis.hgetall(ROWS)


def test_dropping_a_stream_drops_its_feed(feeder, redis):
    feeder.send({"id": 1, "index": 1})
    reply = feeder.client.delete("/streams/agent-1/orders", headers=READER)
    assert reply.status_code == 200
    assert not redis.exists(FEED)


def test_pages_follow_next_cursor(feeder, redis):
    feeder.send(*({"id": n, "index": n} for n in range(1, 6)))
    ids = [entry_id for entry_id, _ in redis.xrange(FEED)]
    first = read(feeder, limit=2).get_json()
    assert [c["id"] for c in first["changes"]] == ids[:2]
    assert first["changes"][0] == {
        "id": ids[0],
        "op": "upsert",
        "key": "1",
        "index": 1,
        "row": {"id": 1, "index": 1},
    }
    rest = read(feeder, after=first["next_cursor"]).get_json()
    assert [c["id"] for c in rest["changes"]] == ids[2:]
    assert rest["next_cursor"] == ids[-1]
    caught_up = read(feeder, after=ids[-1]).get_json()
    assert caught_up == {"changes": [], "next_cursor": ids[-1]}


def test_dollar_gives_the_last_id_and_no_entries(feeder, redis):
    assert read(feeder, after="$").status_code == 404
    feeder.send({"id": 1})
    assert read(feeder, after="$").get_json() == {
        "changes": [],
        "next_cursor": redis.xrange(FEED)[-1][0],
    }


def test_zero_reads_from_the_first_entry_until_some_were_trimmed(feeder, redis):
    feeder.send(*({"id": n, "index": n} for n in range(1, 6)))
    assert len(read(feeder, after="0-0").get_json()["changes"]) == 5
    kept = redis.xrange(FEED)[-2:]
    redis.xtrim(FEED, maxlen=2, approximate=False)  # as MAXLEN ~ trims a long feed
    reply = read(feeder, after="0-0")
    assert reply.status_code == 410
    assert reply.get_json()["oldest_id"] == kept[0][0]


def test_a_cursor_older_than_the_trim_is_gone(feeder, redis):
    feeder.send(*({"id": n, "index": n} for n in range(1, 6)))
    ids = [entry_id for entry_id, _ in redis.xrange(FEED)]
    redis.xtrim(FEED, maxlen=3, approximate=False)
    gone = read(feeder, after=ids[0])
    assert gone.status_code == 410
    body = gone.get_json()
    assert (body["code"], body["status"], body["oldest_id"]) == (410, "Gone", ids[2])
    # From the oldest kept entry on, nothing is missing.
    assert [c["id"] for c in read(feeder, after=ids[2]).get_json()["changes"]] == ids[3:]


def test_a_lost_feed_is_gone_for_every_cursor(feeder, redis):
    feeder.send({"id": 1, "index": 1})
    redis.delete(FEED)  # evicted, or removed by hand
    reply = read(feeder, after="0-0")
    assert reply.status_code == 410
    assert reply.get_json()["oldest_id"] is None


def test_a_cursor_from_before_a_drop_is_gone(feeder, redis):
    feeder.send({"id": 1, "index": 1})
    old = redis.xrange(FEED)[-1][0]
    feeder.client.delete("/streams/agent-1/orders", headers=READER)
    feeder.send({"id": 2, "index": 1})
    redis.xadd(FEED, {"op": "upsert", "key": "3", "index": "", "row": "{}"})  # a later id
    assert read(feeder, after=old).status_code == 410


@pytest.mark.parametrize(
    "after", ["x", "1", "1-", "-1-0", "18446744073709551616-0", "1-0-0", "١-٠", "1-0\n"]
)
def test_a_bad_cursor_is_named(feeder, after):
    feeder.send({"id": 1})
    reply = read(feeder, after=after)
    assert reply.status_code == 400
    assert list(reply.get_json()["errors"]) == ["after"]


def test_an_unknown_stream_is_404(feeder):
    assert read(feeder).status_code == 404


def test_a_key_for_other_agents_may_not_read_the_feed(make_agent, settings):
    limited = (*settings.api_keys, Credential("key#1", "k2", agents=frozenset({"agent-2"})))
    feeder = make_agent(change_feed_maxlen=10, api_keys=limited)
    feeder.send({"id": 1})
    reply = feeder.client.get(CHANGES, headers={"x-api-key": "k2"})
    assert reply.status_code == 403
