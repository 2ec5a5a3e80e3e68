"""fusink on a real 3-master Redis Cluster (REDIS_CLUSTER_URL), through gunicorn."""

from collections import defaultdict
from collections.abc import Callable

import pytest
import redis

from app import create_app, keys
from app.config import Credential, Settings

from .conftest import ClusterServers, Server, assert_sim_passed, call, run_sim

API_KEY = "k1"
SEED = "20240612"


@pytest.fixture(scope="module")
def server(gunicorn_server: Callable[..., Server], redis_cluster: ClusterServers) -> Server:
    """gunicorn (2 workers) whose only Redis setting is the cluster's seed node."""
    return gunicorn_server({"REDIS_CLUSTER_URL": redis_cluster.url, "API_KEYS": API_KEY})


def node_keys(cluster: ClusterServers) -> dict[int, list[str]]:
    """Every key on each master, by port, read with plain SCAN on each node."""
    found = {}
    for node in cluster.servers:
        with redis.Redis("127.0.0.1", node.port, decode_responses=True) as client:
            found[node.port] = list(client.scan_iter(count=1000))
    return found


@pytest.mark.simulator
def test_sim_with_eight_streams_passes_on_the_cluster(
    server: Server, cluster_url: str, redis_cluster: ClusterServers
) -> None:
    proc = run_sim(
        *("--spec-url", f"{server.url}/openapi.json", "--api-key", API_KEY),
        *("--verify-redis", cluster_url, "--redis-cluster", "--strict-layout"),
        *("--streams", "8", "--suggest-snapshot", "5", "--expect-prune", "--replay"),
        *("--tricky-ids", "--seed", SEED, "--wait", "30"),
    )
    assert_sim_passed(proc, server)

    # Every key of a stream hashes to one slot, and that slot is on the node holding it.
    slots: dict[str, set[int]] = defaultdict(set)
    with redis.Redis("127.0.0.1", redis_cluster.servers[0].port) as seed:
        for held in node_keys(redis_cluster).values():
            for key in held:
                if key == keys.streams_key("fusink"):
                    continue
                tag = key[key.index("{") : key.index("}") + 1]
                slots[tag].add(seed.execute_command("CLUSTER KEYSLOT", key))
    assert len(slots) == 8
    assert all(len(stream_slots) == 1 for stream_slots in slots.values()), slots


def test_streams_spread_over_the_masters(
    server: Server, cluster_url: str, redis_cluster: ClusterServers
) -> None:
    streams = [("agent-1", f"orders-{n}") for n in range(24)]
    for agent_id, task_id in streams:
        body = {"agent_id": agent_id, "task_id": task_id, "events": [{"id": 1, "index": 7}]}
        reply = call("POST", f"{server.url}/ingest-batch", body)
        assert reply.status == 200, reply

    held = node_keys(redis_cluster)
    owners = defaultdict(set)
    for port, names in held.items():
        for agent_id, task_id in streams:
            tag = keys.stream_tag(agent_id, task_id)
            if keys.checkpoint_key("fusink", tag) in names:
                assert keys.rows_key("fusink", tag) in names
                owners[port].add(tag)
    assert sum(len(tags) for tags in owners.values()) == len(streams)
    assert set(owners) == {node.port for node in redis_cluster.servers}
    # The global index is one sorted set, on whichever master owns its slot.
    assert sum(keys.streams_key("fusink") in names for names in held.values()) == 1

    for agent_id, task_id in streams[:3]:
        reply = call(
            "GET",
            f"{server.url}/fuagent-sync-status?agent_id={agent_id}&task_id={task_id}",
        )
        assert (reply.status, reply.body) == (200, {"index": 7})


def test_wait_replicas_goes_to_the_master_of_the_stream(cluster_url: str) -> None:
    """WAIT is sent to the stream's master: with no replicas there, the batch gets a 503."""
    settings = Settings(
        redis_cluster_url=cluster_url,
        api_keys=(Credential("key#0", API_KEY),),
        wait_replicas=1,
        wait_timeout_ms=100,
    )
    app = create_app(settings)
    client = app.test_client()
    body = {"agent_id": "agent-1", "task_id": "orders", "events": [{"id": 1, "index": 5}]}
    response = client.post("/ingest-batch", json=body, headers={"x-api-key": API_KEY})
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    cluster = app.extensions["fusink"].store.client
    try:
        tag = keys.stream_tag("agent-1", "orders")
        # Applied on the master, unconfirmed by replicas: the agent's retry is a no-op.
        assert cluster.hget(keys.checkpoint_key("fusink", tag), "index") == "5"
    finally:
        cluster.close()


def test_change_feed_lives_in_the_stream_slot(
    cluster_url: str, redis_cluster: ClusterServers
) -> None:
    """The feed key hashes to its stream's slot: the ingest and prune scripts, which
    take it in KEYS with the rest of the stream, run on one master."""
    settings = Settings(
        redis_cluster_url=cluster_url,
        api_keys=(Credential("key#0", API_KEY),),
        change_feed_maxlen=1000,
    )
    app = create_app(settings)
    client = app.test_client()
    headers = {"x-api-key": API_KEY}
    cluster = app.extensions["fusink"].get_store().client
    seed = redis.Redis("127.0.0.1", redis_cluster.servers[0].port)
    try:
        for task_id in ("orders", "users", "items"):
            tag = keys.stream_tag("agent-1", task_id)
            names = keys.stream_keys("fusink", tag)
            assert len({seed.execute_command("CLUSTER KEYSLOT", name) for name in names}) == 1
            body = {"agent_id": "agent-1", "task_id": task_id, "events": [{"id": 1, "index": 5}]}
            assert client.post("/ingest-batch", json=body, headers=headers).status_code == 200
            reply = client.get(f"/streams/agent-1/{task_id}/changes", headers=headers)
            assert [c["key"] for c in reply.get_json()["changes"]] == ["1"]
            node = cluster.get_node_from_key(keys.checkpoint_key("fusink", tag))
            with redis.Redis(node.host, node.port, decode_responses=True) as owner:
                assert owner.xlen(keys.changes_key("fusink", tag)) == 1
            assert client.delete(f"/streams/agent-1/{task_id}", headers=headers).status_code == 200
            assert cluster.exists(keys.changes_key("fusink", tag)) == 0
    finally:
        seed.close()
        cluster.close()
