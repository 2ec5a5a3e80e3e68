"""Credentials, scopes and agent limits."""

import logging

import pytest

from app.config import Credential
from tests.conftest import basic, batch


@pytest.fixture
def agent(make_agent):
    return make_agent(
        api_keys=(
            Credential("key#0", "k1"),
            Credential("key#1", "rotated"),
            Credential("key#2", "reader", scopes=frozenset({"read"})),
            Credential("key#3", "only-a1", agents=frozenset({"a1"})),
        ),
        basic_auth_users=(Credential("user:sim", "sim:s3cret:x"),),
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": "k1"},
        {"x-api-key": "rotated"},
        {"Authorization": "Bearer k1"},
        basic("sim", "s3cret:x"),
    ],
    ids=["x-api-key", "second key", "bearer", "basic"],
)
def test_each_credential_form_is_accepted(agent, headers):
    response = agent.post(batch({"id": 1}, agent="a1"), headers={"x-api-key": "", **headers})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": "wrong"},
        {"Authorization": "Bearer wrong"},
        basic("sim", "wrong"),
        {"Authorization": "Basic !!!"},
    ],
    ids=["none", "bad key", "bad bearer", "bad password", "malformed basic"],
)
def test_bad_credentials_are_401_and_change_nothing(agent, redis, headers):
    response = agent.client.post("/ingest-batch", json=batch({"id": 1}), headers=headers)
    assert response.status_code == 401
    assert response.get_json()["code"] == 401
    assert "WWW-Authenticate" in response.headers
    assert redis.keys() == []


def test_read_scope_may_read_status_but_not_ingest(agent, redis):
    assert agent.post(batch({"id": 1}), headers={"x-api-key": "reader"}).status_code == 403
    assert redis.keys() == []
    assert agent.status(headers={"x-api-key": "reader"}).status_code == 404


def test_key_limited_to_an_agent_is_refused_for_another(agent, redis):
    limited = {"x-api-key": "only-a1"}
    assert agent.post(batch({"id": 1}, agent="a1"), headers=limited).status_code == 200
    response = agent.post(batch({"id": 1}, agent="a2"), headers=limited)
    assert response.status_code == 403
    assert "a2" in response.get_json()["message"]
    assert agent.status(agent="a2", headers=limited).status_code == 403
    assert redis.exists("fusink:{a2:orders}:checkpoint") == 0


def test_secrets_never_reach_the_logs(agent, caplog):
    caplog.set_level(logging.DEBUG)
    agent.post(batch({"id": 1}), headers={"x-api-key": "k1"})
    agent.post(batch({"id": 1}), headers={"x-api-key": "guess-me"})
    agent.post(batch({"id": 1}), headers=basic("sim", "s3cret:x"))
    logged = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert "k1" not in logged and "guess-me" not in logged and "s3cret" not in logged


def test_auth_disabled_accepts_anonymous_requests(make_agent):
    anonymous = make_agent(api_keys=(), auth_disabled=True)
    response = anonymous.client.post("/ingest-batch", json=batch({"id": 1}))
    assert response.status_code == 200
