"""The request path's own Redis connection, on a real redis-server: lost scripts, dropped links."""

import uuid

import pytest
import redis

from app import create_app, keys
from app.config import Credential, Settings
from tests.conftest import API_KEY, batch


@pytest.fixture
def prefix() -> str:
    return f"conn-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(redis_url: str, prefix: str):
    settings = Settings(
        api_keys=(Credential("key#0", API_KEY),), redis_url=redis_url, key_prefix=prefix
    )
    return create_app(settings).test_client()


def post(client, first_index: int):
    body = batch({"id": first_index, "index": first_index}, task="conn")
    return client.post("/ingest-batch", json=body, headers={"x-api-key": API_KEY})


def status(client):
    query = "/fuagent-sync-status?agent_id=agent-1&task_id=conn"
    return client.get(query, headers={"x-api-key": API_KEY})


def test_a_batch_after_the_scripts_were_flushed_loads_them_again(
    client, real_redis: redis.Redis, prefix: str
) -> None:
    assert post(client, 1).status_code == 200
    real_redis.script_flush()
    reply = post(client, 2)
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["checkpoint"] == 2
    rows = keys.rows_key(prefix, keys.stream_tag("agent-1", "conn"))
    assert real_redis.hgetall(rows).keys() == {"1", "2"}


def test_a_dropped_connection_costs_no_request(client, real_redis: redis.Redis) -> None:
    assert post(client, 1).status_code == 200
    assert status(client).get_json() == {"index": 1}
    for call, expected in ((lambda: post(client, 2), 200), (lambda: status(client), 200)):
        # Every client but this test's own: the app's connections, as a restart would.
        real_redis.client_kill_filter(skipme=True, _type="normal")
        assert call().status_code == expected
    assert status(client).get_json() == {"index": 2}
