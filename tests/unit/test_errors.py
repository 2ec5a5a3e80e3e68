"""Errors: one JSON shape, 503 with Retry-After, no internals in a 500."""

import pytest

from app.errors import flatten_errors
from tests.conftest import batch


def test_nested_errors_flatten_to_dotted_paths():
    nested = {"events": {17: {"index": ["bad"]}, 2: ["not a mapping"]}, "_schema": ["x"]}
    assert flatten_errors(nested) == {
        "events.17.index": ["bad"],
        "events.2": ["not a mapping"],
        "_schema": ["x"],
    }


@pytest.mark.parametrize("path", ["/ingest-batch", "/fuagent-sync-status", "/readyz"])
def test_redis_down_is_503_with_retry_after(client, redis, path):
    redis.connection_pool.connection_kwargs["server"].connected = False
    method = client.post if path == "/ingest-batch" else client.get
    response = method(
        path,
        json=batch({"id": 1, "index": 1}),
        query_string={"agent_id": "a", "task_id": "t"},
        headers={"x-api-key": "k1"},
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["code"] == 503


def test_batch_succeeds_once_redis_is_back(agent, redis):
    server = redis.connection_pool.connection_kwargs["server"]
    server.connected = False
    assert agent.post(batch({"id": 1, "index": 1})).status_code == 503
    server.connected = True
    assert agent.post(batch({"id": 1, "index": 1})).status_code == 200
    assert redis.hget("fusink:{agent-1:orders}:checkpoint", "index") == "1"


def test_unexpected_error_is_500_without_details(app, client):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = client.get("/boom", headers={"X-Request-ID": "req-42"})
    body = response.get_json()
    assert response.status_code == 500
    assert "secret" not in response.get_data(as_text=True)
    assert body["request_id"] == "req-42"
    assert response.headers["X-Request-ID"] == "req-42"


def test_request_id_is_made_when_absent_or_unsafe(client):
    made = client.get("/healthz").headers["X-Request-ID"]
    assert len(made) == 32
    unsafe = client.get("/healthz", headers={"X-Request-ID": "a b"}).headers["X-Request-ID"]
    assert unsafe != "a b" and len(unsafe) == 32
