"""Parallel, shuffled, overlapping batches through several gunicorn instances converge."""

import json
import queue
import random
import threading
from collections.abc import Callable
from urllib.parse import urlencode

import pytest
import redis

from app import keys

from .conftest import RedisServer, Server, call

API_KEY = "k1"
SENDERS = 8


@pytest.fixture(scope="module")
def servers(gunicorn_server: Callable[..., Server], redis_server: RedisServer) -> list[Server]:
    """Two gunicorn instances (2 workers each) sharing one Redis, as behind a load balancer."""
    env = {"REDIS_URL": redis_server.url, "API_KEYS": API_KEY}
    return [gunicorn_server(env, workers=2) for _ in range(2)]


def change_log(rng: random.Random, rows: int, changes: int) -> list[dict]:
    """`changes` events over `rows` row ids, indexes strictly increasing with gaps."""
    index = 1_700_000_000_000
    events = []
    for version in range(changes):
        index += rng.randint(1, 50)
        row = rng.randrange(rows)
        events.append(
            {"id": row, "version": version, "name": f"row {row} v{version}", "index": index}
        )
    return events


def overlapping_batches(events: list[dict], size: int, step: int) -> list[list[dict]]:
    """Windows of `size` events every `step` events, so neighbours share events and rows."""
    return [events[start : start + size] for start in range(0, len(events), step)]


def status_url(server: Server, agent_id: str, task_id: str) -> str:
    return f"{server.url}/fuagent-sync-status?" + urlencode(
        {"agent_id": agent_id, "task_id": task_id}
    )


def send_in_parallel(
    servers: list[Server], streams: dict[tuple[str, str], list[dict]], seed: int
) -> list[str]:
    """Post every stream's batches from SENDERS threads in shuffled order, some twice.

    Meanwhile one thread polls the checkpoints; returns what went wrong, if anything.
    """
    rng = random.Random(seed)
    work = []
    for (agent_id, task_id), events in streams.items():
        for batch in overlapping_batches(events, size=30, step=20):
            body = {
                "agent_id": agent_id,
                "task_id": task_id,
                "events": rng.sample(batch, len(batch)),
            }
            work.append(body)
            if rng.random() < 0.2:
                work.append(body)  # a retry whose first answer was lost
    rng.shuffle(work)
    jobs: queue.Queue = queue.Queue()
    for n, body in enumerate(work):
        jobs.put((servers[n % len(servers)], body))
    problems: list[str] = []
    done = threading.Event()

    def sender() -> None:
        while True:
            try:
                server, body = jobs.get_nowait()
            except queue.Empty:
                return
            reply = call("POST", f"{server.url}/ingest-batch", body, api_key=API_KEY)
            if reply.status != 200:
                problems.append(f"batch answered {reply.status}: {reply.body}")

    def poller() -> None:
        seen = dict.fromkeys(streams, -1)
        while not done.is_set():
            for n, stream in enumerate(streams):
                reply = call("GET", status_url(servers[n % len(servers)], *stream))
                if reply.status == 200:
                    if reply.body["index"] < seen[stream]:
                        problems.append(f"{stream}: checkpoint went back to {reply.body}")
                    seen[stream] = reply.body["index"]
                elif reply.status != 404:
                    problems.append(f"status answered {reply.status}: {reply.body}")

    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    watcher = threading.Thread(target=poller)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    watcher.join(timeout=30)
    return problems


def assert_converged(
    redis_url: str, servers: list[Server], streams: dict[tuple[str, str], list[dict]]
) -> None:
    """Each stream holds the latest image of every row, and checkpoint = highest index."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        for (agent_id, task_id), events in streams.items():
            latest = {}
            for event in events:  # in index order: the last image of a row wins
                latest[str(event["id"])] = event
            tag = keys.stream_tag(agent_id, task_id)
            stored = client.hgetall(keys.rows_key("fusink", tag))
            assert {key: json.loads(value) for key, value in stored.items()} == latest
            highest = max(event["index"] for event in events)
            assert client.hget(keys.checkpoint_key("fusink", tag), "index") == str(highest)
            for server in servers:
                reply = call("GET", status_url(server, agent_id, task_id))
                assert (reply.status, reply.body) == (200, {"index": highest})
    finally:
        client.close()


def test_one_stream_from_many_threads_converges(servers: list[Server], redis_url: str) -> None:
    streams = {("agent-1", "orders"): change_log(random.Random(1), rows=30, changes=600)}
    assert send_in_parallel(servers[:1], streams, seed=11) == []
    assert_converged(redis_url, servers[:1], streams)


def test_two_instances_fed_the_same_streams_converge(servers: list[Server], redis_url: str) -> None:
    rng = random.Random(2)
    streams = {("agent-1", f"orders-{n}"): change_log(rng, rows=40, changes=500) for n in range(3)}
    assert send_in_parallel(servers, streams, seed=22) == []
    assert_converged(redis_url, servers, streams)
