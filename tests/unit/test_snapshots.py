"""Snapshot lifecycle and prune on fakeredis running the real Lua scripts."""

import time

import pytest

from app import snapshots
from app.rows import Columns
from app.state import get_store

CHECKPOINT = "fusink:{agent-1:orders}:checkpoint"
ROWS = "fusink:{agent-1:orders}:rows"
ROW_META = "fusink:{agent-1:orders}:rowmeta"
LOCK = "fusink:{agent-1:orders}:prune-lock"
ADMIN = {"x-api-key": "k1"}


def rows(*ids, index):
    return [{"id": i, "v": f"r{i}@{index}", "index": index} for i in ids]


def start_snapshot(agent, *ids, index=100):
    """Store rows `ids` (index 1..), then suggest a snapshot and insist it starts."""
    agent.send(*({"id": i, "v": f"r{i}@{i}", "index": i} for i in ids))
    answer = agent.send(*rows(ids[0], index=index), snapshot_sync_suggested=True)
    assert answer["snapshot_needed"] is True


def end_without_pruning(app, now_ms=1):
    """The is_snapshot_end batch applied by the Store alone, as by a process that
    died before its first prune step."""
    store = app.extensions["fusink"].get_store()
    result = store.apply_batch(
        "agent-1", "orders", Columns(), "", suggested=False, snapshot_end=True, now_ms=now_ms
    )
    assert result.snapshot_state == "pruning"
    return store


def step(store, token="t1", count=10):
    return store.step_prune("agent-1", "orders", token=token, now_ms=2, count=count, lease_ms=5000)


def test_snapshot_end_deletes_rows_the_snapshot_did_not_send(agent, redis):
    start_snapshot(agent, 1, 2, 3, 4, 5)
    agent.send(*rows(1, 2, 3, index=110))  # the snapshot's rows
    agent.send(*rows(6, index=111))  # realtime, during the snapshot
    answer = agent.send(is_snapshot_end=True)
    assert answer["snapshot_needed"] is False
    assert sorted(redis.hkeys(ROWS)) == ["1", "2", "3", "6"]
    assert sorted(redis.hkeys(ROW_META)) == ["1", "2", "3", "6"]
    state = redis.hgetall(CHECKPOINT)
    assert state["snapshot_state"] == "completed"
    assert state["snapshot_generation"] == "1"
    assert state["snapshot_rows_pruned"] == "2"
    assert state["snapshot_rows_seen"] == "4"
    assert state["prune_floor"] == "5"  # the checkpoint when the snapshot began
    assert not {"prune_generation", "prune_rows_cursor", "prune_deleted"} & state.keys()
    assert not redis.exists(LOCK)


def test_rows_record_the_generation_only_while_a_snapshot_runs(agent, redis):
    agent.send({"id": 1, "index": 5}, {"index": 5, "id": 4})
    assert redis.hgetall(ROW_META) == {"4": "5"}  # 1's JSON ends with its index
    agent.send({"id": 2, "index": 6}, snapshot_sync_suggested=True)
    agent.send({"id": 3, "index": 7})
    assert (redis.hget(ROW_META, "2"), redis.hget(ROW_META, "3")) == ("6:1", "7:1")


def test_prune_deletes_rows_without_row_meta_and_with_an_older_generation(agent, redis):
    agent.send({"id": 1, "index": 1}, {"index": 2, "id": 2}, {"id": 3, "index": 3})
    agent.send({"id": 1, "index": 4}, snapshot_sync_suggested=True)  # generation 1
    agent.send({"id": 3, "index": 5})
    agent.send(is_snapshot_end=True)
    assert redis.hgetall(ROWS).keys() == {"1", "3"}
    agent.send({"id": 1, "index": 6})  # after the snapshot: its row meta is stale
    assert redis.hget(ROW_META, "1") == "4:1"
    agent.send({"id": 3, "index": 7}, snapshot_sync_suggested=True)  # generation 2
    agent.send(is_snapshot_end=True)
    assert redis.hgetall(ROWS).keys() == {"3"}
    assert redis.hgetall(ROW_META) == {"3": "7:2"}
    assert redis.hget(CHECKPOINT, "snapshot_rows_pruned") == "1"


def test_a_prune_an_earlier_version_began_starts_over_on_the_rows(agent, app, redis):
    start_snapshot(agent, *range(1, 30))
    agent.send(*rows(1, index=110))
    store = end_without_pruning(app)
    # As an earlier version left it: part-way through the row-meta hash.
    redis.hdel(CHECKPOINT, "prune_rows_cursor")
    redis.hset(CHECKPOINT, "prune_cursor", "7")
    while step(store)[0] == "more":
        pass
    assert sorted(redis.hkeys(ROWS)) == ["1"]
    assert not {"prune_cursor", "prune_rows_cursor"} & redis.hgetall(CHECKPOINT).keys()


def test_snapshot_needed_is_answered_once(agent):
    start_snapshot(agent, 1)
    assert agent.send(*rows(2, index=200), snapshot_sync_suggested=True)["snapshot_needed"] is False
    assert agent.send(*rows(2, index=201))["snapshot_needed"] is False


def test_snapshot_end_keeps_rows_when_prune_is_off(make_agent, redis):
    agent = make_agent(snapshot_prune=False)
    start_snapshot(agent, 1, 2, 3)
    agent.send(is_snapshot_end=True)
    assert sorted(redis.hkeys(ROWS)) == ["1", "2", "3"]
    assert redis.hget(CHECKPOINT, "snapshot_state") == "completed"
    assert not redis.hexists(CHECKPOINT, "prune_floor")


def test_snapshot_end_without_a_running_snapshot_prunes_nothing(agent, redis):
    agent.send(*rows(1, 2, index=5))
    agent.send(is_snapshot_end=True)
    assert sorted(redis.hkeys(ROWS)) == ["1", "2"]
    assert redis.hget(CHECKPOINT, "snapshot_end_at") is not None
    assert redis.hget(CHECKPOINT, "snapshot_state") is None


def test_operator_request_is_answered_on_the_next_batch_once(agent, client, redis):
    agent.send(*rows(1, index=1))
    response = client.post("/streams/agent-1/orders/snapshot", headers=ADMIN)
    assert response.status_code == 200
    assert response.get_json()["snapshot"]["state"] == "requested"
    assert redis.hget(CHECKPOINT, "snapshot_state") == "requested"
    assert agent.send(*rows(2, index=2))["snapshot_needed"] is True
    assert agent.send(*rows(3, index=3))["snapshot_needed"] is False
    assert redis.hget(CHECKPOINT, "snapshot_state") == "running"


def test_operator_request_replaces_a_snapshot_that_never_ended(agent, client, redis):
    assert agent.send(*rows(1, index=1), snapshot_sync_suggested=True)["snapshot_needed"]
    assert not agent.send(*rows(2, index=2), snapshot_sync_suggested=True)["snapshot_needed"]
    assert client.post("/streams/agent-1/orders/snapshot", headers=ADMIN).status_code == 200
    assert agent.send(*rows(3, index=3))["snapshot_needed"] is True
    assert redis.hget(CHECKPOINT, "snapshot_generation") == "2"


def test_late_pre_snapshot_batch_does_not_bring_back_a_pruned_row(agent, redis):
    start_snapshot(agent, 1, 2, 3)
    agent.send(*rows(1, 3, index=110))
    agent.send(is_snapshot_end=True)
    assert not redis.hexists(ROWS, "2")
    answer = agent.send(*rows(2, index=2))  # a retry of the batch that wrote it
    assert answer["rows_skipped"] == 1
    assert not redis.hexists(ROWS, "2")
    assert not redis.hexists(ROW_META, "2")


def test_pruned_row_stays_out_after_the_checkpoint_was_raised(app, agent, client, redis):
    # The floor (100, the raised checkpoint) is above every index a batch carried (5):
    # a late event in index order for a pruned row must still meet the floor.
    agent.send(*rows(1, 2, index=5))
    app.extensions["fusink"].get_store().set_checkpoint("agent-1", "orders", 100)
    assert client.post("/streams/agent-1/orders/snapshot", headers=ADMIN).status_code == 200
    assert agent.send()["snapshot_needed"] is True
    agent.send(is_snapshot_end=True)  # the snapshot sent no rows: both are pruned
    assert redis.hget(CHECKPOINT, "prune_floor") == "100"
    assert agent.send(*rows(2, index=50))["rows_skipped"] == 1
    assert not redis.hexists(ROWS, "2")


def test_row_reinserted_after_the_snapshot_began_is_stored(agent, redis):
    start_snapshot(agent, 1, 2, 3)
    agent.send(*rows(1, 3, index=110))
    agent.send(is_snapshot_end=True)
    answer = agent.send(*rows(2, index=120))
    assert answer["rows_written"] == 1
    assert redis.hget(ROWS, "2") == '{"id":2,"v":"r2@120","index":120}'


def test_prune_runs_in_steps_and_rows_written_meanwhile_survive(app, agent, redis):
    # Over 512 rows, so that real Redis keeps a hash table (HSCAN honours COUNT).
    start_snapshot(agent, *range(1, 1001), index=2000)
    agent.send(*rows(*range(1, 11), index=2010))  # the snapshot sends rows 1..10
    store = end_without_pruning(app)
    assert redis.hget(CHECKPOINT, "snapshot_state") == "pruning"
    status, deleted = step(store)
    assert status == "more"
    assert deleted < 990
    # Realtime during the prune: an old row rewritten, a new one; then the prune ends.
    already_pruned = not redis.hexists(ROWS, "40")
    agent.send(*rows(40, 5000, index=2020))
    while status == "more":
        status, _ = step(store)
    assert status == "done"
    assert sorted(redis.hkeys(ROWS), key=int) == [*map(str, range(1, 11)), "40", "5000"]
    state = redis.hgetall(CHECKPOINT)
    assert state["snapshot_state"] == "completed"
    assert state["snapshot_rows_pruned"] == ("990" if already_pruned else "989")
    assert state["snapshot_rows_seen"] == "12"


def test_another_runner_is_kept_out_while_it_holds_the_lease(app, agent, redis):
    start_snapshot(agent, *range(1, 1001))
    store = end_without_pruning(app)
    assert step(store, token="a")[0] == "more"
    assert redis.get(LOCK) == "a"
    assert step(store, token="b") == ("busy", 0)
    redis.delete(LOCK)  # the lease ran out: its runner died
    assert step(store, token="b")[0] == "more"


def test_interrupted_prune_is_finished_by_the_next_status_request(app, agent, redis):
    start_snapshot(agent, *range(1, 2001))
    agent.send(*rows(1, 2, index=110))
    store = end_without_pruning(app)
    step(store, count=100)
    redis.delete(LOCK)  # the process died between steps
    assert agent.status().status_code == 200
    assert snapshots.wait_for_prunes(10)
    assert redis.hget(CHECKPOINT, "snapshot_state") == "completed"
    assert sorted(redis.hkeys(ROWS)) == ["1", "2"]
    assert redis.hget(CHECKPOINT, "snapshot_rows_pruned") == "1998"


def test_interrupted_prune_is_finished_by_the_next_batch(app, agent, redis):
    start_snapshot(agent, *range(1, 101))
    store = end_without_pruning(app)
    agent.send(*rows(7, index=120))
    assert snapshots.wait_for_prunes(10)
    assert redis.hget(CHECKPOINT, "snapshot_state") == "completed"
    assert sorted(redis.hkeys(ROWS)) == ["1", "7"]
    assert store.step_prune("agent-1", "orders", token="x", now_ms=1, count=10, lease_ms=10) == (
        "done",
        0,
    )


def test_prune_longer_than_the_request_budget_finishes_in_the_background(app, agent, redis):
    start_snapshot(agent, *range(1, 3001))
    store = end_without_pruning(app)
    with app.app_context():
        status = snapshots.continue_prune(get_store(), "agent-1", "orders", budget_s=0)
    assert status == "more"
    assert redis.hget(CHECKPOINT, "snapshot_state") in ("pruning", "completed")
    assert snapshots.wait_for_prunes(10)
    assert redis.hget(CHECKPOINT, "snapshot_state") == "completed"
    assert redis.hkeys(ROWS) == ["1"]
    assert step(store)[0] == "done"


def test_snapshot_asked_for_during_a_prune_follows_it(app, agent, client, redis):
    start_snapshot(agent, *range(1, 31))
    store = end_without_pruning(app)
    response = client.post("/streams/agent-1/orders/snapshot", headers=ADMIN)
    assert response.status_code == 200
    assert response.get_json()["snapshot"]["state"] == "pruning"
    assert response.get_json()["snapshot"]["deferred"] is True
    answer = store.apply_batch(
        "agent-1", "orders", Columns(), "", suggested=True, snapshot_end=False, now_ms=3
    )
    assert answer.snapshot_needed is False
    assert redis.hget(CHECKPOINT, "snapshot_generation") == "1"
    while step(store)[0] == "more":
        pass
    assert redis.hget(CHECKPOINT, "snapshot_state") == "requested"
    assert not redis.hexists(CHECKPOINT, "snapshot_deferred")
    assert agent.send(*rows(1, index=200))["snapshot_needed"] is True
    assert redis.hget(CHECKPOINT, "snapshot_generation") == "2"


@pytest.mark.parametrize("floor, started, expected", [("99", "100", "100"), ("100", "99", "100")])
def test_prune_floor_only_grows(agent, redis, floor, started, expected):
    agent.send(*rows(1, index=1))
    redis.hset(CHECKPOINT, mapping={"prune_floor": floor, "index": started})
    assert agent.send(snapshot_sync_suggested=True)["snapshot_needed"] is True
    agent.send(is_snapshot_end=True)
    assert redis.hget(CHECKPOINT, "prune_floor") == expected


def test_prune_floor_compares_indexes_beyond_double_precision(agent, redis):
    # 2^63-2 and 2^63-1 are one double: compared as numbers the floor would not move.
    agent.send(*rows(1, index=2**63 - 2))
    redis.hset(CHECKPOINT, "prune_floor", str(2**63 - 3))
    assert agent.send(snapshot_sync_suggested=True)["snapshot_needed"] is True
    agent.send(is_snapshot_end=True)
    assert redis.hget(CHECKPOINT, "prune_floor") == str(2**63 - 2)


def test_dropping_a_stream_mid_prune_stops_the_prune(app, agent, client, redis):
    start_snapshot(agent, *range(1, 1001))
    store = end_without_pruning(app)
    assert step(store)[0] == "more"
    assert client.delete("/streams/agent-1/orders", headers=ADMIN).status_code == 200
    assert step(store) == ("done", 0)
    assert not redis.keys("fusink:{agent-1:orders}:*")


def test_pruning_a_large_stream_does_not_hold_the_request(agent, redis):
    start_snapshot(agent, *range(1, 201))
    started = time.monotonic()
    agent.send(is_snapshot_end=True)
    assert time.monotonic() - started < snapshots.PRUNE_REQUEST_BUDGET_S + 1
    assert snapshots.wait_for_prunes(10)
    assert redis.hkeys(ROWS) == ["1"]
