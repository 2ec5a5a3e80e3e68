"""The gunicorn worker on real gunicorn and Redis: kept-alive connections, the threads setting."""

import http.client
import json
import signal
import threading
from collections.abc import Callable

import pytest

from app.worker import POOLED_BODY_BYTES

from .conftest import RedisServer, Server, call

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
    ("threads", "events", "healthz_first"),
    [("1", 200, False), ("3", 200, True), ("3", 1, False)],
    ids=["one-thread", "large-batch-on-a-thread", "small-batch-in-the-loop"],
)
def test_a_large_batch_waits_on_redis_on_a_thread_while_the_loop_serves_on(
    gunicorn_server: Callable[..., Server],
    redis_factory: Callable[..., RedisServer],
    threads: str,
    events: int,
    healthz_first: bool,
) -> None:
    """One worker; an ingest waits on a frozen Redis while /healthz (no Redis) is asked.

    A body of 8 KiB or more goes to one of the worker's other threads, and /healthz is
    answered in the loop before the ingest gives up; with one thread, or a small body
    called in the loop itself, /healthz waits its turn.
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
    if healthz_first:
        assert finished == [("healthz", 200), ("ingest", 503)]
    else:
        assert finished == [("ingest", 503), ("healthz", 200)]
