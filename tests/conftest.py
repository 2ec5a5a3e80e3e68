"""Shared fixtures: settings, fakeredis, the app, its client, and an agent helper."""

import base64
import os
from dataclasses import replace
from pathlib import Path

import fakeredis
import pytest

from app import create_app
from app.config import Credential, Settings

API_KEY = "k1"

# Where fakeredis's Lua finds the cmsgpack that Redis has built in (tests/lua/).
os.environ["LUA_PATH"] = f"{Path(__file__).parent / 'lua' / '?.lua'};;"


@pytest.fixture
def settings():
    return Settings(api_keys=(Credential("key#0", API_KEY),))


@pytest.fixture
def redis():
    return fakeredis.FakeRedis(
        server=fakeredis.FakeServer(), decode_responses=True, lua_modules={"cmsgpack"}
    )


@pytest.fixture
def app(settings, redis):
    return create_app(settings, redis)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def batch(*events, agent="agent-1", task="orders", **flags):
    """A fuagent batch body."""
    return {"agent_id": agent, "task_id": task, "events": list(events), **flags}


def basic(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class AgentActions:
    """Talks to the app the way fuagent does."""

    def __init__(self, client):
        self.client = client

    def post(self, body, headers=None, **kwargs):
        headers = {"x-api-key": API_KEY, "task-id": "orders", **(headers or {})}
        return self.client.post("/ingest-batch", json=body, headers=headers, **kwargs)

    def send(self, *events, **flags):
        """Post a batch and insist it was accepted; return the JSON answer."""
        response = self.post(batch(*events, **flags))
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def status(self, agent="agent-1", task="orders", headers=None):
        headers = headers if headers is not None else {"Authorization": f"Bearer {API_KEY}"}
        return self.client.get(
            "/fuagent-sync-status",
            query_string={"agent_id": agent, "task_id": task},
            headers=headers,
        )


@pytest.fixture
def agent(client):
    return AgentActions(client)


@pytest.fixture
def make_agent(settings, redis):
    """An agent talking to an app built with some settings changed."""

    def make(**overrides):
        return AgentActions(create_app(replace(settings, **overrides), redis).test_client())

    return make


def redis_state(redis) -> dict:
    """Every key and its whole content, as redis-cli would show them."""
    state = {}
    for key in redis.scan_iter():
        kind = redis.type(key)
        if kind == "hash":
            state[key] = redis.hgetall(key)
        elif kind == "zset":
            state[key] = redis.zrange(key, 0, -1, withscores=True)
        else:
            state[key] = kind
    return state


def rows_from_feed(redis, feed_key: str) -> dict[str, str]:
    """The rows a consumer holds after following the change feed from its start."""
    held = {}
    for _, entry in redis.xrange(feed_key):
        if entry["op"] == "upsert":
            held[entry["key"]] = entry["row"]
        else:
            del held[entry["key"]]  # a delete names a row the feed has upserted
    return held
