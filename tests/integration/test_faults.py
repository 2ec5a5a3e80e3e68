"""Faults against real processes: frozen and restarted Redis, killed and stopped workers."""

import http.client
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from app import keys

from .conftest import RedisServer, Server, assert_sim_passed, call, run_sim, stop_redis

API_KEY = "k1"
STATUS = "/fuagent-sync-status?agent_id=agent-1&task_id=orders"
CHECKPOINT = keys.checkpoint_key("fusink", keys.stream_tag("agent-1", "orders"))
ROWS = keys.rows_key("fusink", keys.stream_tag("agent-1", "orders"))


def service_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "API_KEYS": API_KEY, **extra}


def batch(first: int, count: int) -> dict:
    """Rows first..first+count-1, each with index 1000 + its id."""
    events = [{"id": n, "index": 1000 + n, "name": f"row {n}"} for n in range(first, first + count)]
    return {"agent_id": "agent-1", "task_id": "orders", "events": events}


def workers_of(master: Server) -> list[int]:
    """The pids of a gunicorn master's worker processes."""
    pid = master.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def test_frozen_then_restarted_redis_answers_503_then_recovers(
    gunicorn_server: Callable[..., Server],
    redis_factory: Callable[..., RedisServer],
) -> None:
    store = redis_factory()
    server = gunicorn_server(service_env(store.url, REDIS_TIMEOUT="0.5"))
    ingest = f"{server.url}/ingest-batch"
    assert call("POST", ingest, batch(0, 5)).status == 200

    store.process.send_signal(signal.SIGSTOP)
    try:
        for method, url, body in (
            ("POST", ingest, batch(5, 5)),
            ("GET", server.url + STATUS, None),
        ):
            started = time.monotonic()
            reply = call(method, url, body, timeout=20)
            # Within REDIS_TIMEOUT (plus slack), far from gunicorn's 30 s worker timeout.
            assert time.monotonic() - started < 5
            assert reply.status == 503, reply
            assert reply.headers["Retry-After"].isdigit()
        assert call("GET", f"{server.url}/readyz").status == 503
    finally:
        store.process.send_signal(signal.SIGCONT)

    assert call("POST", ingest, batch(10, 5)).status == 200
    assert call("GET", server.url + STATUS).body == {"index": 1014}

    # A restart on the same port (empty: this one keeps no data) is picked up as well.
    stop_redis(store)
    redis_factory(port=store.port)
    assert call("POST", ingest, batch(20, 5)).status == 200
    assert call("GET", server.url + STATUS).body == {"index": 1024}
    assert call("GET", f"{server.url}/readyz").status == 200


@pytest.mark.simulator
def test_sim_run_survives_a_redis_restart(
    gunicorn_server: Callable[..., Server],
    redis_factory: Callable[..., RedisServer],
    tmp_path: Path,
) -> None:
    durable = ("--appendonly", "yes", "--appendfsync", "always")
    store = redis_factory(*durable, data_dir=tmp_path)
    server = gunicorn_server(service_env(store.url, REDIS_TIMEOUT="1"))
    watcher = redis.Redis.from_url(store.url, decode_responses=True)

    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(
            run_sim,
            *("--spec-url", f"{server.url}/openapi.json", "--api-key", API_KEY),
            *("--verify-redis", store.url, "--seed", "20240613", "--max-retries", "30"),
            *("--rows", "100", "--changes", "3000", "--batch-size", "10", "--resume"),
        )
        # Crash Redis once the run is under way, and bring it back a second later.
        deadline = time.monotonic() + 60
        while not any(True for _ in watcher.scan_iter("fusink:*:checkpoint")):
            assert time.monotonic() < deadline and not run.done(), "the run never started"
            time.sleep(0.02)
        watcher.close()
        stop_redis(store, kill=True)
        time.sleep(1)
        redis_factory(*durable, port=store.port, data_dir=tmp_path)
        proc = run.result(timeout=240)
    assert_sim_passed(proc, server)
    assert " retr" in proc.stdout.splitlines()[-1]  # it did meet the outage


def test_killed_workers_never_leave_a_batch_half_applied(
    gunicorn_server: Callable[..., Server], real_redis: redis.Redis, redis_url: str
) -> None:
    server = gunicorn_server(service_env(redis_url))
    size = 1000
    batches = list(range(0, 40 * size, size))
    random.Random(5).shuffle(batches)
    pending = list(batches)
    acknowledged: set[int] = set()
    lock = threading.Lock()

    def sender() -> None:
        while True:
            with lock:
                if not pending:
                    return
                first = pending.pop()
            try:
                reply = call("POST", f"{server.url}/ingest-batch", batch(first, size))
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(getattr(exc, "reason", exc), ConnectionRefusedError):
                    # No worker listens yet (each has its own SO_REUSEPORT socket): the
                    # batch was never sent, so send it again.
                    with lock:
                        pending.append(first)
                    time.sleep(0.01)
                # Otherwise the worker died under it: neither acknowledged nor retried.
                continue
            if reply.status == 200:
                with lock:
                    acknowledged.add(first)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    for progress in (4, 12, 20):
        while len(acknowledged) < progress and time.monotonic() < deadline:
            time.sleep(0.002)
        # Every worker at once, while the other senders wait for their answers.
        for pid in workers_of(server):
            os.kill(pid, signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=120)

    stored = {int(key) for key in real_redis.hkeys(ROWS)}
    for first in batches:
        held = len(stored & set(range(first, first + size)))
        assert held in (0, size), f"batch {first} is half-applied: {held} of {size} rows"
        if first in acknowledged:
            assert held == size, f"acknowledged batch {first} is missing"
    assert acknowledged
    assert len(acknowledged) < len(batches), "no batch was in flight when the workers died"
    # The checkpoint is the highest index stored, never one of a batch that was lost.
    assert real_redis.hget(CHECKPOINT, "index") == str(1000 + max(stored))


def test_sigterm_lets_in_flight_batches_finish(
    gunicorn_server: Callable[..., Server], real_redis: redis.Redis, redis_url: str
) -> None:
    server = gunicorn_server(service_env(redis_url), workers=1)
    body = json.dumps(batch(0, 10_000)).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.putrequest("POST", "/ingest-batch")
    for name, value in (
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("x-api-key", API_KEY),
    ):
        connection.putheader(name, value)
    connection.endheaders()
    half = len(body) // 2
    connection.send(body[:half])
    time.sleep(0.3)  # let the worker take the connection

    server.process.send_signal(signal.SIGTERM)
    connection.send(body[half:])
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()

    assert response.status == 200, answer
    assert answer["snapshot_needed"] is False
    assert real_redis.hlen(ROWS) == 10_000
    assert real_redis.hget(CHECKPOINT, "index") == str(1000 + 9_999)
    assert server.process.wait(timeout=60) == 0
