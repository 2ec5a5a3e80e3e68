"""Snapshot prune on a real redis-server: fuagent-sim through gunicorn, prunes under
concurrent ingest, a prune left by a dead process, and the /streams API over HTTP."""

import json
import threading
import time
from collections.abc import Callable
from urllib.parse import quote

import pytest

from app import create_app, snapshots
from app.config import Credential, Settings
from app.rows import Columns
from tests.conftest import AgentActions

from .conftest import RedisServer, Server, assert_sim_passed, call, run_sim

SEED = "20240611"
API_KEYS = json.dumps([{"key": "k1"}, {"key": "reader", "scopes": ["read"]}])
CHECKPOINT = "fusink:{agent-1:orders}:checkpoint"
ROWS = "fusink:{agent-1:orders}:rows"
ODD_AGENT = "sim agent:{ü☃}%2F/x"
ODD_TASK = "orders:{eu} 100%/é"


@pytest.fixture(scope="module")
def server(gunicorn_server: Callable[..., Server], redis_server: RedisServer) -> Server:
    """gunicorn with the default settings: SNAPSHOT_PRUNE on."""
    return gunicorn_server({"REDIS_URL": redis_server.url, "API_KEYS": API_KEYS}, workers=2)


@pytest.fixture
def app(real_redis):
    return create_app(Settings(api_keys=(Credential("key#0", "k1"),)), real_redis)


@pytest.fixture
def agent(app):
    return AgentActions(app.test_client())


def run_pruning_sim(server: Server, redis_url: str, *args: str) -> None:
    proc = run_sim(
        *("--spec-url", f"{server.url}/openapi.json", "--api-key", "k1"),
        *("--verify-redis", redis_url, "--expect-prune", "--strict-layout"),
        *("--seed", SEED, "--wait", "30", "--suggest-snapshot", "3"),
        *args,
    )
    assert_sim_passed(proc, server)
    assert "prune checked" in proc.stdout.splitlines()[-1]


def assert_every_snapshot_pruned(real_redis, streams: int) -> None:
    checkpoints = [real_redis.hgetall(k) for k in real_redis.scan_iter("fusink:*:checkpoint")]
    assert len(checkpoints) == streams
    assert {c["snapshot_state"] for c in checkpoints} == {"completed"}
    assert sum(int(c["snapshot_rows_pruned"]) for c in checkpoints) > 0
    assert not list(real_redis.scan_iter("fusink:*:prune-lock"))


@pytest.mark.simulator
def test_sim_snapshot_prunes_rows_deleted_at_the_source(
    server: Server, redis_url: str, real_redis
) -> None:
    run_pruning_sim(server, redis_url)
    assert_every_snapshot_pruned(real_redis, streams=1)


@pytest.mark.simulator
def test_sim_prunes_with_every_scenario_at_once(server: Server, redis_url: str, real_redis) -> None:
    run_pruning_sim(server, redis_url, "--replay", "--resume", "--streams", "3", "--tricky-ids")
    assert_every_snapshot_pruned(real_redis, streams=3)


def seed_pruning_stream(agent, real_redis, rows: int, sent_by_snapshot: int) -> None:
    """rows rows, a snapshot that sends the first sent_by_snapshot of them, and its end
    applied by the Store alone: the state a process leaves when it dies at once."""
    agent.send(*({"id": n, "v": "old", "index": n} for n in range(1, rows + 1)))
    assert agent.send(snapshot_sync_suggested=True)["snapshot_needed"] is True
    snapshot = [{"id": n, "v": "snap", "index": rows + 1} for n in range(1, sent_by_snapshot + 1)]
    agent.send(*snapshot)
    store = agent.client.application.extensions["fusink"].get_store()
    now_ms = time.time_ns() // 1_000_000
    result = store.apply_batch(
        "agent-1", "orders", Columns(), "", suggested=False, snapshot_end=True, now_ms=now_ms
    )
    assert result.snapshot_state == "pruning"


def step(app, token: str, count: int = 100, lease_ms: int = 5000):
    store = app.extensions["fusink"].get_store()
    return store.step_prune(
        "agent-1", "orders", token=token, now_ms=1, count=count, lease_ms=lease_ms
    )


def test_rows_written_between_prune_steps_survive(app, agent, real_redis) -> None:
    seed_pruning_stream(agent, real_redis, rows=3000, sent_by_snapshot=1000)
    survivors, kept, steps = set(range(1, 1001)), 0, 0
    while step(app, "t")[0] == "more":
        steps += 1
        # Between two steps: a pre-snapshot row rewritten, and a new row.
        old, new = 1001 + (steps * 37) % 2000, 10_000 + steps
        kept += real_redis.hexists(ROWS, str(old)) and old not in survivors
        agent.send({"id": old, "v": "rt", "index": 5000 + steps}, {"id": new, "v": "rt"})
        survivors |= {old, new}
    assert steps > 10  # the prune took many steps
    assert {int(k) for k in real_redis.hkeys(ROWS)} == survivors
    state = real_redis.hgetall(CHECKPOINT)
    assert state["snapshot_state"] == "completed"
    assert int(state["snapshot_rows_seen"]) == len(survivors)
    assert int(state["snapshot_rows_pruned"]) == 2000 - kept


def test_rows_written_by_concurrent_batches_during_a_prune_survive(app, real_redis) -> None:
    agent = AgentActions(app.test_client())
    seed_pruning_stream(agent, real_redis, rows=5000, sent_by_snapshot=100)
    written, stop = set(), threading.Event()

    def realtime() -> None:
        other = AgentActions(app.test_client())
        n = 0
        while not stop.is_set() or n < 5:
            ids = [100 + (n * 53 + k) % 4900 for k in range(5)] + [20_000 + n]
            other.send(*({"id": i, "v": "rt", "index": 6000 + n} for i in ids))
            written.update(ids)
            n += 1

    # This test holds the lease from its first step: the batches' own steps stand by.
    status, _ = step(app, "t", count=50)
    writer = threading.Thread(target=realtime)
    writer.start()
    try:
        while status == "more":
            status, _ = step(app, "t", count=50)
    finally:
        stop.set()
        writer.join()
    assert status == "done"
    stored = {int(k) for k in real_redis.hkeys(ROWS)}
    assert stored == set(range(1, 101)) | written
    assert real_redis.hget(CHECKPOINT, "snapshot_state") == "completed"


def test_prune_left_by_a_dead_process_is_finished_by_the_next_request(
    server: Server, app, agent, real_redis
) -> None:
    seed_pruning_stream(agent, real_redis, rows=4000, sent_by_snapshot=10)
    for _ in range(3):  # a few steps, then the process dies holding a short lease
        assert step(app, "dead", lease_ms=200)[0] == "more"
    assert real_redis.hget(CHECKPOINT, "snapshot_state") == "pruning"
    time.sleep(0.3)
    reply = call("GET", f"{server.url}/fuagent-sync-status?agent_id=agent-1&task_id=orders")
    assert reply.status == 200
    deadline = time.monotonic() + 15
    while real_redis.hget(CHECKPOINT, "snapshot_state") != "completed":
        assert time.monotonic() < deadline, real_redis.hgetall(CHECKPOINT)
        time.sleep(0.05)
    assert sorted(int(k) for k in real_redis.hkeys(ROWS)) == list(range(1, 11))
    assert real_redis.hget(CHECKPOINT, "snapshot_rows_pruned") == "3990"
    assert not real_redis.exists("fusink:{agent-1:orders}:prune-lock")


def test_streams_api_over_gunicorn_with_odd_ids(server: Server, real_redis) -> None:
    base = f"{server.url}/streams/{quote(ODD_AGENT, safe='')}/{quote(ODD_TASK, safe='')}"
    events = [{"id": f"k/{n}%", "index": n} for n in range(1, 151)]
    body = {"agent_id": ODD_AGENT, "task_id": ODD_TASK, "events": events}
    assert call("POST", f"{server.url}/ingest-batch", body).status == 200

    listed = call("GET", f"{server.url}/streams", api_key="reader")
    assert listed.status == 200
    assert [(s["agent_id"], s["task_id"]) for s in listed.body["streams"]] == [
        (ODD_AGENT, ODD_TASK)
    ]
    stream = call("GET", base, api_key="reader")
    assert (stream.status, stream.body["checkpoint"], stream.body["rows"]) == (200, 150, 150)

    keys, cursor = [], None
    while True:
        url = f"{base}/rows?limit=40" + (f"&cursor={quote(cursor)}" if cursor else "")
        page = call("GET", url, api_key="reader")
        assert page.status == 200 and len(page.body["rows"]) <= 40
        keys += [row["key"] for row in page.body["rows"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert sorted(keys) == sorted(e["id"] for e in events)

    row = call("GET", f"{base}/rows/{quote('k/7%', safe='')}", api_key="reader")
    assert (row.status, row.body) == (200, {"id": "k/7%", "index": 7})
    assert call("GET", f"{base}/rows/nope", api_key="reader").status == 404
    assert call("GET", f"{server.url}/streams/x/y", api_key="reader").status == 404

    assert call("POST", f"{base}/snapshot", api_key="reader").status == 403
    requested = call("POST", f"{base}/snapshot")
    assert (requested.status, requested.body["snapshot"]["state"]) == (200, "requested")

    assert call("DELETE", base, api_key="reader").status == 403
    dropped = call("DELETE", base)
    assert (dropped.status, dropped.body["rows_deleted"]) == (200, 150)
    status = call(
        "GET",
        f"{server.url}/fuagent-sync-status?agent_id={quote(ODD_AGENT)}&task_id={quote(ODD_TASK)}",
    )
    assert status.status == 404
    assert real_redis.keys("*") == []


def test_prune_and_the_streams_api_work_on_a_redis_cluster(cluster_url: str) -> None:
    from redis.cluster import RedisCluster

    settings = Settings(api_keys=(Credential("key#0", "k1"),), redis_cluster_url=cluster_url)
    app = create_app(settings)
    agent, headers = AgentActions(app.test_client()), {"x-api-key": "k1"}
    for task in ("orders", "users", "items"):  # three streams, in different slots
        agent.post({"agent_id": "agent-1", "task_id": task, "events": [{"id": 1}]})
    seed_pruning_stream(agent, None, rows=600, sent_by_snapshot=5)
    assert agent.status().status_code == 200  # resumes the prune
    assert snapshots.wait_for_prunes(15)
    client = app.test_client()
    stream = client.get("/streams/agent-1/orders", headers=headers).get_json()
    assert (stream["snapshot"]["state"], stream["rows"]) == ("completed", 5)
    listed = client.get("/streams", headers=headers).get_json()["streams"]
    assert sorted(s["task_id"] for s in listed) == ["items", "orders", "users"]
    rows = client.get("/streams/agent-1/orders/rows", headers=headers).get_json()["rows"]
    assert sorted(int(r["key"]) for r in rows) == [1, 2, 3, 4, 5]
    assert client.get("/streams/agent-1/orders/rows/3", headers=headers).status_code == 200
    assert client.delete("/streams/agent-1/users", headers=headers).status_code == 200
    with RedisCluster.from_url(cluster_url, decode_responses=True) as cluster:
        listed = sorted(cluster.zrange("fusink:streams", 0, -1))
        assert listed == ["{agent-1:items}", "{agent-1:orders}"]
        assert not cluster.exists("fusink:{agent-1:users}:rows")
