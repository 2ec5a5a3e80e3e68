"""The change feed on a real redis-server: concurrent batches through gunicorn, a
snapshot's prune under fuagent-sim, trimming with MAXLEN ~, and the 410."""

import random
from collections import defaultdict
from collections.abc import Callable

import pytest

from app import create_app, keys
from app.config import Credential, Settings
from tests.conftest import AgentActions, rows_from_feed

from .conftest import RedisServer, Server, assert_sim_passed, call, run_sim
from .test_scale_out import API_KEY, assert_converged, change_log, send_in_parallel

FEED = "fusink:{agent-1:orders}:changes"
SEED = "20240611"  # the seed test_prune knows to delete rows at the source


@pytest.fixture(scope="module")
def server(gunicorn_server: Callable[..., Server], redis_server: RedisServer) -> Server:
    """gunicorn (2 workers) with the change feed on."""
    env = {"REDIS_URL": redis_server.url, "API_KEYS": API_KEY, "CHANGE_FEED_MAXLEN": "100000"}
    return gunicorn_server(env, workers=2)


def feed_agent(real_redis, maxlen: int) -> AgentActions:
    settings = Settings(api_keys=(Credential("key#0", API_KEY),), change_feed_maxlen=maxlen)
    return AgentActions(create_app(settings, real_redis).test_client())


def assert_feed_matches_rows(real_redis, tag: str) -> None:
    """Followed from its start, the feed gives the stored rows exactly."""
    feed = keys.changes_key("fusink", tag)
    assert rows_from_feed(real_redis, feed) == real_redis.hgetall(keys.rows_key("fusink", tag))


def test_feed_matches_the_rows_after_concurrent_shuffled_replayed_batches(
    server: Server, redis_url: str, real_redis
) -> None:
    rng = random.Random(3)
    streams = {("agent-1", f"orders-{n}"): change_log(rng, rows=30, changes=400) for n in range(2)}
    assert send_in_parallel([server], streams, seed=33) == []
    assert_converged(redis_url, [server], streams)
    for agent_id, task_id in streams:
        tag = keys.stream_tag(agent_id, task_id)
        assert_feed_matches_rows(real_redis, tag)
        # Every version has a higher index than the last, so an entry for a stale or
        # replayed event would break the rise of its row's indexes.
        indexes = defaultdict(list)
        for _, entry in real_redis.xrange(keys.changes_key("fusink", tag)):
            indexes[entry["key"]].append(int(entry["index"]))
        assert all(seen == sorted(set(seen)) for seen in indexes.values()), indexes


@pytest.mark.simulator
def test_sim_snapshot_prunes_appear_in_the_feed(server: Server, redis_url: str, real_redis) -> None:
    proc = run_sim(
        *("--spec-url", f"{server.url}/openapi.json", "--api-key", API_KEY),
        *("--verify-redis", redis_url, "--expect-prune", "--replay", "--streams", "2"),
        *("--suggest-snapshot", "3", "--seed", SEED, "--wait", "30"),
    )
    assert_sim_passed(proc, server)
    feeds = list(real_redis.scan_iter("fusink:*:changes"))
    assert len(feeds) == 2
    deletes = 0
    for feed in feeds:
        tag = feed[feed.index("{") : feed.index("}") + 1]
        assert_feed_matches_rows(real_redis, tag)
        deletes += sum(entry["op"] == "delete" for _, entry in real_redis.xrange(feed))
    pruned = sum(
        int(real_redis.hget(key, "snapshot_rows_pruned"))
        for key in real_redis.scan_iter("fusink:*:checkpoint")
    )
    assert deletes == pruned > 0


def test_trimming_keeps_about_maxlen_entries(real_redis) -> None:
    agent = feed_agent(real_redis, maxlen=500)
    for n in range(40):
        agent.send(*({"id": n * 100 + k, "index": n * 100 + k} for k in range(100)))
    kept = real_redis.xlen(FEED)
    # MAXLEN ~ removes whole stream nodes (at most 100 entries each, by default).
    assert 500 <= kept <= 600
    checkpoint = real_redis.hgetall("fusink:{agent-1:orders}:checkpoint")
    assert checkpoint["changes_added"] == "4000"


def test_a_cursor_trimmed_past_is_gone_with_the_oldest_id(real_redis) -> None:
    agent = feed_agent(real_redis, maxlen=100)
    agent.send({"id": 0, "index": 1})
    url = "/streams/agent-1/orders/changes"
    headers = {"x-api-key": API_KEY}
    start = agent.client.get(url, headers=headers).get_json()["next_cursor"]
    assert agent.client.get(url, query_string={"after": "0-0"}, headers=headers).status_code == 200
    for n in range(10):
        agent.send(*({"id": k, "v": n, "index": 2 + n * 100 + k} for k in range(100)))
    oldest = real_redis.xrange(FEED, count=1)[0][0]
    for after in (start, "0-0"):
        reply = agent.client.get(url, query_string={"after": after}, headers=headers)
        assert reply.status_code == 410
        assert reply.get_json()["oldest_id"] == oldest
    # A reader that starts again from the oldest kept entry misses nothing.
    reply = agent.client.get(url, query_string={"after": oldest, "limit": 1000}, headers=headers)
    assert len(reply.get_json()["changes"]) == real_redis.xlen(FEED) - 1


def test_feed_endpoint_through_gunicorn(server: Server, redis_url: str) -> None:
    body = {"agent_id": "agent-1", "task_id": "orders", "events": [{"id": 7, "index": 70}]}
    assert call("POST", f"{server.url}/ingest-batch", body).status == 200
    reply = call("GET", f"{server.url}/streams/agent-1/orders/changes?after=0-0")
    assert reply.status == 200
    [change] = reply.body["changes"]
    assert (change["op"], change["key"], change["index"], change["row"]) == (
        "upsert",
        "7",
        70,
        {"id": 7, "index": 70},
    )
    assert reply.body["next_cursor"] == change["id"]
