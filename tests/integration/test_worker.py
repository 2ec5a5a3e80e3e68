"""The gunicorn worker on real gunicorn and Redis: kept-alive connections, the threads setting."""

import http.client
import json
import signal
import threading
from collections.abc import Callable

import pytest

from app import keys
from app.config import Settings
from app.worker import POOLED_BODY_BYTES

from .conftest import RedisServer, Reply, Server, call

API_KEY = "k1"


def big_batch(task: str, first: int, count: int) -> bytes:
    events = [{"id": n, "index": n, "note": "x" * 80} for n in range(first, first + count)]
    return json.dumps({"agent_id": "agent-w", "task_id": task, "events": events}).encode()


def test_large_batches_back_to_back_share_one_kept_alive_connection(
    gunicorn_server: Callable[..., Server], redis_url: str
) -> None:
    server = gunicorn_server({"REDIS_URL": redis_url, "API_KEYS": API_KEY}, workers=1)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Content-Type": "application/json", "x-api-key": API_KEY}
    sockets = set()
    try:
        for round_ in range(6):
            body = big_batch("keepalive", round_ * 2000 + 1, 2000)  # about 200 KB
            connection.request("POST", "/ingest-batch", body=body, headers=headers)
            response = connection.getresponse()
            assert response.status == 200, response.read()
            assert json.loads(response.read())["checkpoint"] == (round_ + 1) * 2000
            assert not response.will_close
            sockets.add(id(connection.sock))
    finally:
        connection.close()
    assert len(sockets) == 1  # http.client would have reconnected after a close


@pytest.mark.parametrize(
    ("threads", "events"),
    [("1", 200), ("1", 1), ("3", 200), ("3", 1)],
    ids=[
        "large-batch-in-the-loop",
        "small-batch-in-the-loop",
        "large-batch-on-a-thread",
        "small-batch-on-three-threads",
    ],
)
def test_the_loop_serves_on_while_an_ingest_waits_on_redis(
    gunicorn_server: Callable[..., Server],
    redis_factory: Callable[..., RedisServer],
    threads: str,
    events: int,
) -> None:
    """One worker; an ingest waits on a frozen Redis while /healthz (no Redis) is asked.

    A body of 8 KiB or more goes to one of the worker's other threads when it has
    some; a request called in the loop waits on Redis through the loop's pipeline.
    Either way /healthz is answered before the ingest gives up.
    """
    store = redis_factory()
    env = {"REDIS_URL": store.url, "API_KEYS": API_KEY, "REDIS_TIMEOUT": "2"}
    server = gunicorn_server(env | {"GUNICORN_THREADS": threads}, workers=1)
    body = json.loads(big_batch("frozen", 1, events))
    assert (len(json.dumps(body)) >= POOLED_BODY_BYTES) == (events > 1)
    finished = []

    def ingest() -> None:
        finished.append(("ingest", call("POST", f"{server.url}/ingest-batch", body).status))

    store.process.send_signal(signal.SIGSTOP)
    try:
        sender = threading.Thread(target=ingest)
        sender.start()
        sender.join(0.5)  # the ingest is now waiting on Redis
        finished.append(("healthz", call("GET", f"{server.url}/healthz").status))
        sender.join()
    finally:
        store.process.send_signal(signal.SIGCONT)
    assert finished == [("healthz", 200), ("ingest", 503)]


def test_in_the_loop_a_flushed_script_or_a_dropped_connection_costs_no_request(
    gunicorn_server: Callable[..., Server], real_redis, redis_url: str
) -> None:
    """Requests called in the loop send their commands through its pipeline, which
    reloads a lost script and retries once on a fresh connection, as the threads do."""
    env = {"REDIS_URL": redis_url, "API_KEYS": API_KEY, "GUNICORN_THREADS": "1"}
    server = gunicorn_server(env, workers=1)

    def post(index: int) -> Reply:
        body = {"agent_id": "agent-w", "task_id": "loop", "events": [{"id": index, "index": index}]}
        return call("POST", f"{server.url}/ingest-batch", body)

    assert post(1).status == 200
    real_redis.script_flush()
    assert post(2).body["checkpoint"] == 2
    real_redis.client_kill_filter(skipme=True, _type="normal")  # the worker's connections
    assert post(3).body["checkpoint"] == 3
    real_redis.client_kill_filter(skipme=True, _type="normal")
    status = call("GET", f"{server.url}/fuagent-sync-status?agent_id=agent-w&task_id=loop")
    assert status.body == {"index": 3}
    rows = keys.rows_key(Settings().key_prefix, keys.stream_tag("agent-w", "loop"))
    assert real_redis.hlen(rows) == 3
