"""Real gunicorn masters: a taken port, a second fusink, the start-up line, chunked bodies."""

import http.client
import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from app import keys

from .conftest import (
    RedisServer,
    Server,
    call,
    excerpt,
    free_port,
    spawn_gunicorn,
    stop_process,
    wait_until_healthy,
)

API_KEY = "k1"
PASSWORD = "redis-password-9c1f"
STATUS = "/fuagent-sync-status?agent_id=agent-1&task_id=orders"
CHECKPOINT = keys.checkpoint_key("fusink", keys.stream_tag("agent-1", "orders"))


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Return start(port, env): a gunicorn master for this test only, not waited for."""
    started: list[Server] = []

    def start(port: int, env: dict[str, str]) -> Server:
        log_path = tmp_path / f"gunicorn-{len(started)}.log"
        server = spawn_gunicorn(port, {"API_KEYS": API_KEY, **env}, log_path)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_process(server.process, 15, group=True)


def exit_code(server: Server, timeout: float = 20) -> int:
    """The master's exit status; fails with its log when it is still running."""
    try:
        return server.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"gunicorn kept running on a taken port:\n{excerpt(server.log_text())}")


def log_lines(server: Server) -> list[dict]:
    return [json.loads(line) for line in server.log_text().splitlines()]


def assert_refused_with_one_line(server: Server) -> None:
    assert exit_code(server) != 0
    lines = log_lines(server)
    errors = [line["message"] for line in lines if line["level"] == "error"]
    assert len(errors) == 1, errors
    assert f"port {server.port} " in errors[0] and "already in use" in errors[0]
    assert not any(line["message"].startswith("Booting worker") for line in lines)


def test_a_port_another_program_listens_on_stops_start_up(spawn, redis_url: str) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        server = spawn(other.getsockname()[1], {"REDIS_URL": redis_url})
        assert_refused_with_one_line(server)


def test_a_second_fusink_on_the_same_port_refuses_to_start(
    spawn, redis_url: str, redis_factory: Callable[..., RedisServer]
) -> None:
    first = spawn(free_port(), {"REDIS_URL": redis_url})
    wait_until_healthy(first)
    body = {"agent_id": "agent-1", "task_id": "orders", "events": [{"id": 1, "index": 7}]}
    assert call("POST", f"{first.url}/ingest-batch", body).status == 200

    second = spawn(first.port, {"REDIS_URL": redis_factory().url})
    assert_refused_with_one_line(second)
    # Every call reaches the first instance, and its Redis.
    statuses = [call("GET", first.url + STATUS).body for _ in range(12)]
    assert statuses == [{"index": 7}] * 12


def test_start_up_line_names_address_workers_redis_and_auth(
    spawn, redis_factory: Callable[..., RedisServer]
) -> None:
    store = redis_factory()
    with redis.Redis.from_url(store.url) as admin:
        admin.config_set("requirepass", PASSWORD)
    url = f"redis://:{PASSWORD}@127.0.0.1:{store.port}/0"
    server = spawn(free_port(), {"REDIS_URL": url, "GUNICORN_THREADS": "3"})
    wait_until_healthy(server)
    assert call("GET", f"{server.url}/readyz").status == 200  # the password does work
    [line] = [x["message"] for x in log_lines(server) if x["message"].startswith("fusink ")]
    assert line == (
        f"fusink listening on http://0.0.0.0:{server.port} (every interface) with 2 workers, "
        "each calling the app in its event loop and on 3 threads for large batches; "
        f"Redis redis://:***@127.0.0.1:{store.port}/0; "
        "authentication on (1 API key(s), 0 Basic user(s))"
    )
    assert PASSWORD not in server.log_text()


def test_the_embedded_redis_is_named_at_start_up_and_serves_the_workers(
    spawn, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = spawn(
        free_port(), {"EMBEDDED_REDIS_DIR": str(data), "API_KEYS": "", "AUTH_DISABLED": "1"}
    )
    wait_until_healthy(server)
    [line] = [x["message"] for x in log_lines(server) if x["message"].startswith("fusink ")]
    assert f"embedded Redis unix://{data}/redis.sock" in line
    assert f"redis-cli -s {data}/redis.sock)" in line
    assert line.endswith("authentication OFF (AUTH_DISABLED)")
    # The workers' loops reach the same server over its socket.
    body = {"agent_id": "agent-1", "task_id": "embedded", "events": [{"id": 1, "index": 7}]}
    assert call("POST", f"{server.url}/ingest-batch", body).body["checkpoint"] == 7
    status = call("GET", f"{server.url}/fuagent-sync-status?agent_id=agent-1&task_id=embedded")
    assert status.body == {"index": 7}


def test_chunked_body_over_max_content_length_is_413_through_gunicorn(
    spawn, redis_url: str, real_redis: redis.Redis
) -> None:
    server = spawn(free_port(), {"REDIS_URL": redis_url, "MAX_CONTENT_LENGTH": "2000"})
    wait_until_healthy(server)
    events = [{"id": n, "index": n, "name": "x" * 20} for n in range(100)]
    body = json.dumps({"agent_id": "agent-1", "task_id": "orders", "events": events}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(
            "POST",
            "/ingest-batch",
            body=(body[n : n + 500] for n in range(0, len(body), 500)),
            headers={"x-api-key": API_KEY, "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert (response.status, answer["code"]) == (413, 413)
    assert not real_redis.exists(CHECKPOINT)
