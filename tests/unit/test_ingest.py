"""Ingest semantics on fakeredis running the real Lua script."""

import json
import random
import threading

import pytest

from app.rows import stored_index

ROWS = "fusink:{agent-1:orders}:rows"
ROW_META = "fusink:{agent-1:orders}:rowmeta"
CHECKPOINT = "fusink:{agent-1:orders}:checkpoint"
MAX_INDEX = 2**63 - 1


def stored_row(redis, key):
    value = redis.hget(ROWS, key)
    return None if value is None else json.loads(value)


def stored_rows(redis) -> dict:
    """Every stored row, parsed, by row key."""
    return {key: json.loads(row) for key, row in redis.hgetall(ROWS).items()}


def stored_indexes(redis) -> dict:
    """Every stored row's index as fusink reads it (its JSON's, else its row meta's)."""
    metas = redis.hgetall(ROW_META)
    return {key: stored_index(row, metas.get(key)) for key, row in redis.hgetall(ROWS).items()}


def test_batch_upserts_rows_and_sets_checkpoint(agent, redis):
    answer = agent.send({"id": 101, "name": "Alice", "index": 5}, {"id": "b", "index": 7})
    assert answer == {
        "snapshot_needed": False,
        "checkpoint": 7,
        "rows_written": 2,
        "rows_skipped": 0,
    }
    assert stored_row(redis, "101") == {"id": 101, "name": "Alice", "index": 5}
    assert stored_row(redis, "b") == {"id": "b", "index": 7}
    assert redis.hget(CHECKPOINT, "index") == "7"
    assert redis.hget(CHECKPOINT, "events") == "2"
    assert redis.hget(CHECKPOINT, "batches") == "1"
    assert agent.status().get_json() == {"index": 7}


def test_rows_are_stored_as_compact_json_with_non_ascii_kept(agent, redis):
    agent.send({"id": 1, "name": "Zoë ☃", "tags": [], "n": None, "index": 1})
    assert redis.hget(ROWS, "1") == '{"id":1,"name":"Zoë ☃","tags":[],"n":null,"index":1}'


def test_integers_beyond_64_bits_are_stored_exactly(agent, redis):
    row = '{"id":1,"big":123456789012345678901234567890,"index":3}'
    body = '{"agent_id":"agent-1","task_id":"orders","events":[' + row + "]}"
    response = agent.client.post(
        "/ingest-batch", data=body, content_type="application/json", headers={"x-api-key": "k1"}
    )
    assert response.status_code == 200
    assert redis.hget(ROWS, "1") == row


def test_older_event_does_not_replace_newer_row(agent, redis):
    agent.send({"id": 1, "v": "new", "index": 20})
    answer = agent.send({"id": 1, "v": "old", "index": 10})
    assert answer["rows_skipped"] == 1
    assert stored_row(redis, "1")["v"] == "new"
    assert redis.hget(CHECKPOINT, "index") == "20"


def test_equal_index_replaces_row(agent, redis):
    agent.send({"id": 1, "v": "a", "index": 20})
    agent.send({"id": 1, "v": "b", "index": 20})
    assert stored_row(redis, "1")["v"] == "b"


def test_event_without_index_always_applies(agent, redis):
    agent.send({"id": 1, "v": "indexed", "index": 20})
    agent.send({"id": 1, "v": "plain"})
    assert stored_row(redis, "1")["v"] == "plain"
    agent.send({"id": 1, "v": "older", "index": 5})
    assert stored_row(redis, "1")["v"] == "plain"


def test_later_event_in_same_batch_wins(agent, redis):
    agent.send({"id": 1, "v": "a", "index": 2}, {"id": 1, "v": "b", "index": 3})
    assert stored_row(redis, "1")["v"] == "b"
    agent.send({"id": 2, "v": "a", "index": 9}, {"id": 2, "v": "b", "index": 8})
    assert stored_row(redis, "2")["v"] == "a"


def test_indexes_near_two_to_the_63_compare_exactly(agent, redis):
    agent.send({"id": 1, "v": "max", "index": MAX_INDEX})
    agent.send({"id": 1, "v": "one less", "index": MAX_INDEX - 1})
    assert stored_row(redis, "1")["v"] == "max"
    assert redis.hget(CHECKPOINT, "index") == str(MAX_INDEX)
    assert agent.status().get_json() == {"index": MAX_INDEX}


def test_checkpoint_never_moves_backwards(agent, redis):
    agent.send({"id": 1, "index": 100})
    answer = agent.send({"id": 2, "index": 50})
    assert answer["checkpoint"] == 100
    assert redis.hget(CHECKPOINT, "index") == "100"
    assert stored_row(redis, "2") == {"id": 2, "index": 50}


def test_replayed_batch_changes_nothing_but_counters(agent, redis):
    events = [{"id": i, "v": i, "index": 10 + i} for i in range(5)]
    agent.send(*events)
    rows_before = redis.hgetall(ROWS)
    agent.send(*events)
    assert redis.hgetall(ROWS) == rows_before
    assert redis.hget(CHECKPOINT, "index") == "14"


def test_out_of_order_batches_converge(make_agent, redis):
    changes = [
        {"id": random.Random(i).randrange(20), "v": i, "index": 1000 + i} for i in range(200)
    ]
    batches = [changes[i : i + 10] for i in range(0, 200, 10)]
    results = []
    for seed in (1, 2):
        order = batches[:]
        random.Random(seed).shuffle(order)
        redis.flushall()
        agent = make_agent()
        for events in order:
            agent.send(*events)
        results.append((redis.hgetall(ROWS), redis.hget(CHECKPOINT, "index")))
    latest = {}
    for change in changes:
        latest[str(change["id"])] = change
    assert {k: json.loads(v) for k, v in results[0][0].items()} == latest
    assert results[0] == results[1]
    assert results[0][1] == "1199"


def test_rows_follow_the_ordered_upsert_through_replays_and_checkpoint_resets(app, agent, redis):
    """Batches in index order (written without reading the stored indexes), shuffled
    replays, events without an index or with it before their other fields (row meta
    then holds it) and checkpoint resets leave the rows, indexes and answers that the
    ordered upsert defines, event by event."""
    rng = random.Random(5)
    store = app.extensions["fusink"].get_store()
    model, batches, top, checkpoint = {}, [], 0, None  # model: row key -> (index, event)
    for _ in range(120):
        roll = rng.random()
        if roll < 0.1:
            checkpoint = rng.choice([None, rng.randint(1, top + 1), top + rng.randint(1, 9)])
            store.set_checkpoint("agent-1", "orders", checkpoint)
            continue
        if roll < 0.2 and batches:  # an earlier batch again, as the agent resends it
            events = rng.choice(batches)
        elif roll < 0.3 and batches:  # earlier events, out of order
            sent = [event for events in batches for event in events]
            events = rng.sample(sent, min(len(sent), rng.randint(1, 6)))
        else:
            events = []
            for _ in range(rng.randint(1, 6)):
                top += rng.randint(0, 2)
                if rng.random() < 0.3:
                    events.append({"index": top, "id": rng.randint(1, 12), "v": rng.random()})
                else:
                    events.append({"id": rng.randint(1, 12), "v": rng.random(), "index": top})
            if rng.random() < 0.1:
                events.append({"id": rng.randint(1, 12), "v": "no index"})
        written = 0
        for event in events:
            key, index = str(event["id"]), event.get("index")
            stored = model.get(key, (None, None))[0]
            if index is None or stored is None or index >= stored:
                model[key] = (stored if index is None else index, event)
                written += 1
        batches.append(events)
        answer = agent.send(*events)
        assert (answer["rows_written"], answer["rows_skipped"]) == (written, len(events) - written)
        indexes = [event["index"] for event in events if "index" in event]
        if indexes and (checkpoint is None or max(indexes) > checkpoint):
            checkpoint = max(indexes)
        assert answer["checkpoint"] == checkpoint
    assert stored_rows(redis) == {key: event for key, (_, event) in model.items()}
    assert stored_indexes(redis) == {
        key: "" if index is None else str(index) for key, (index, _) in model.items()
    }


def test_a_lowered_checkpoint_does_not_let_older_events_replace_newer_rows(app, agent, redis):
    agent.send({"id": 1, "v": "new", "index": 50}, {"id": 2, "v": "new", "index": 51})
    app.extensions["fusink"].get_store().set_checkpoint("agent-1", "orders", 10)
    answer = agent.send({"id": 1, "v": "old", "index": 20}, {"id": 2, "v": "old", "index": 30})
    assert (answer["rows_written"], answer["rows_skipped"], answer["checkpoint"]) == (0, 2, 30)
    assert stored_row(redis, "1")["v"] == stored_row(redis, "2")["v"] == "new"


def test_a_stream_from_before_rows_index_keeps_its_rows_through_a_reset(app, agent, redis):
    agent.send({"id": 1, "v": "new", "index": 50})
    redis.hdel(CHECKPOINT, "rows_index")  # as a stream written by an earlier fusink
    app.extensions["fusink"].get_store().set_checkpoint("agent-1", "orders", None)
    assert redis.hget(CHECKPOINT, "rows_index") == "50"
    assert agent.send({"id": 1, "v": "old", "index": 20})["rows_skipped"] == 1
    assert stored_row(redis, "1")["v"] == "new"


def test_ten_thousand_event_batch_is_applied_whole(agent, redis):
    events = [{"id": i, "index": i} for i in range(10_000)]
    answer = agent.send(*events)
    assert answer["rows_written"] == 10_000
    assert redis.hlen(ROWS) == 10_000
    assert redis.hget(CHECKPOINT, "index") == "9999"
    # Every row under its own key, across the script's chunks: written in order, then
    # resent (each stored index read back), with the odd rows changed.
    assert stored_rows(redis) == {str(event["id"]): event for event in events}
    resent = [dict(event, v=event["id"]) if event["id"] % 2 else event for event in events]
    assert agent.send(*resent)["rows_written"] == 10_000
    assert stored_rows(redis) == {str(event["id"]): event for event in resent}


def test_composite_row_key_is_compact_json_array(make_agent, redis):
    make_agent(row_key_fields=("id", "region")).send({"id": 7, "region": "eu", "index": 1})
    assert redis.hkeys(ROWS) == ['[7,"eu"]']


def test_empty_batch_without_index_leaves_no_checkpoint(agent):
    agent.send()
    assert agent.status().status_code == 404


def test_missing_checkpoint_is_404_with_json_error(agent):
    response = agent.status(task="unknown")
    assert response.status_code == 404
    assert response.get_json()["code"] == 404


def test_missing_checkpoint_zero_answers_index_zero(make_agent):
    response = make_agent(missing_checkpoint="zero").status(task="unknown")
    assert (response.status_code, response.get_json()) == (200, {"index": 0})


@pytest.mark.parametrize("missing", ["agent_id", "task_id"])
def test_status_without_a_query_parameter_is_400(agent, missing):
    query = {"agent_id": "a", "task_id": "t"}
    del query[missing]
    response = agent.client.get(
        "/fuagent-sync-status", query_string=query, headers={"x-api-key": "k1"}
    )
    assert response.status_code == 400
    assert missing in response.get_json()["errors"]


def test_suggested_snapshot_is_answered_once_and_recorded(agent, redis):
    first = agent.send({"id": 1, "index": 1}, snapshot_sync_suggested=True)
    assert first["snapshot_needed"] is True
    again = agent.send({"id": 2, "index": 2}, snapshot_sync_suggested=True)
    assert again["snapshot_needed"] is False
    assert redis.hget(CHECKPOINT, "snapshot_state") == "running"
    assert redis.hget(CHECKPOINT, "snapshot_generation") == "1"
    agent.send(is_snapshot_end=True)
    assert redis.hget(CHECKPOINT, "snapshot_state") == "completed"
    assert redis.hget(CHECKPOINT, "snapshot_end_at") is not None


def test_suggestion_is_not_answered_when_snapshot_on_suggest_is_off(make_agent, redis):
    answer = make_agent(snapshot_on_suggest=False).send(
        {"id": 1, "index": 1}, snapshot_sync_suggested=True
    )
    assert answer["snapshot_needed"] is False
    assert redis.hget(CHECKPOINT, "snapshot_suggested_at") is not None


@pytest.mark.parametrize(
    "ids",
    [
        [2**53 + 1, 2**63, 2**70],  # beyond a Lua number's 53 bits, beyond 64 bits
        ["clé ü", "0012", "1e3"],  # text, some of it like a number
        [7, "7x", 2**70],  # integers and text in one batch
    ],
)
def test_row_keys_and_indexes_reach_redis_digit_for_digit(agent, redis, ids):
    events = [{"id": row_id, "index": MAX_INDEX - 2 + n} for n, row_id in enumerate(ids)]
    agent.send(*events)
    assert stored_rows(redis) == {str(event["id"]): event for event in events}
    assert stored_indexes(redis) == {str(event["id"]): str(event["index"]) for event in events}


def test_rows_whose_json_ends_with_their_index_get_no_row_meta(agent, redis):
    agent.send({"id": 1, "v": "a", "index": 5}, {"id": 2, "v": {"index": 1}, "index": 6})
    agent.send({"id": 1, "v": "b", "index": 4}, {"id": 2, "v": "b", "index": 7})  # read back
    assert redis.hgetall(ROW_META) == {}
    assert stored_row(redis, "1")["v"] == "a"  # 4 is older than the stored 5
    assert stored_indexes(redis) == {"1": "5", "2": "7"}


def test_row_meta_keeps_the_index_of_a_row_whose_json_does_not_end_with_it(agent, redis):
    agent.send({"index": 5, "id": 1, "v": "a"}, {"id": 2, "v": "a", "index": 6, "w": 0})
    assert redis.hgetall(ROW_META) == {"1": "5", "2": "6"}
    answer = agent.send({"id": 1, "v": "old", "index": 4}, {"id": 2, "v": "old", "index": 5})
    assert (answer["rows_written"], answer["rows_skipped"]) == (0, 2)
    agent.send({"id": 1, "v": "new", "index": 9})  # its JSON ends with its index now
    assert redis.hget(ROW_META, "1") == "5"  # stale, and not read: the JSON's 9 counts
    answer = agent.send({"id": 1, "v": "old", "index": 7})
    assert answer["rows_skipped"] == 1
    assert stored_row(redis, "1")["v"] == "new"
    assert stored_indexes(redis) == {"1": "9", "2": "6"}


def test_row_meta_every_row_writes_it_as_earlier_versions_did(make_agent, redis):
    agent = make_agent(row_meta_every_row=True)
    agent.send({"id": 1, "index": 5}, {"index": 6, "id": 2})
    agent.send({"id": 1, "index": 7}, {"id": 2, "index": 4})  # 4 is skipped
    assert redis.hgetall(ROW_META) == {"1": "7", "2": "6"}


@pytest.mark.parametrize(
    "last",
    [
        {"v": {"index": 99}},  # a nested object's index ends the JSON
        {"v": [1, {"index": 99}]},
        {'"index': 99},  # a field named with a quote: ,"\"index":99}
        {"v": ',"index":99}'},  # a string
    ],
)
def test_what_only_looks_like_a_trailing_index_is_not_taken_for_one(agent, redis, last):
    agent.send({"id": 1, "index": 5, **last}, {"id": 2, "index": 100})
    assert stored_indexes(redis) == {"1": "5", "2": "100"}
    # Below the stream's highest index, so the stored index is read: 5, not 99.
    assert agent.send({"id": 1, "index": 50, "v": "newer than 5"})["rows_written"] == 1


def test_stream_is_listed_in_the_global_index(agent, redis):
    agent.send({"id": 1, "index": 1})
    assert redis.zrange("fusink:streams", 0, -1) == ["{agent-1:orders}"]


def test_odd_ids_are_percent_encoded_in_keys(agent, redis):
    agent.send({"id": 1, "index": 4}, agent="a:{b}", task="t 100%/é")
    assert redis.hget("fusink:{a%3A%7Bb%7D:t%20100%25%2F%C3%A9}:checkpoint", "index") == "4"
    assert agent.status(agent="a:{b}", task="t 100%/é").get_json() == {"index": 4}


def test_each_thread_keeps_its_own_connection_for_the_request_path(app, agent, redis):
    agent.send({"id": 1, "index": 1})
    store = app.extensions["fusink"].get_store()
    mine = store._thread_client()
    assert store._thread_client() is mine
    theirs = []
    worker = threading.Thread(target=lambda: theirs.append(store._thread_client()))
    worker.start()
    worker.join()
    assert theirs[0].connection is not mine.connection
    agent.send({"id": 1, "index": 2})
    assert redis.hget(CHECKPOINT, "index") == "2"
