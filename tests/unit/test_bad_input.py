"""Bad input gets a clear JSON 4xx that names the problem, and changes nothing."""

import pytest

from tests.conftest import batch, redis_state

GOOD = {"id": 1, "index": 1}
MAX_INDEX = 2**63 - 1

# (name, request body or raw bytes, status, the error key that must be named)
CASES = [
    ("index as string", batch(GOOD, {"id": 2, "index": "5"}), 422, "events.1.index"),
    ("index as float", batch({"id": 2, "index": 5.0}), 422, "events.0.index"),
    ("index as boolean", batch({"id": 2, "index": True}), 422, "events.0.index"),
    ("negative index", batch({"id": 2, "index": -1}), 422, "events.0.index"),
    ("index above 2^63-1", batch({"id": 2, "index": MAX_INDEX + 1}), 422, "events.0.index"),
    ("null index", batch({"id": 2, "index": None}), 422, "events.0.index"),
    ("missing row key", batch(GOOD, GOOD, {"index": 3}), 422, "events.2.id"),
    ("object row key", batch({"id": {"a": 1}, "index": 3}), 422, "events.0.id"),
    ("boolean row key", batch({"id": True}), 422, "events.0.id"),
    ("event not an object", batch(GOOD, 5), 422, "events.1"),
    ("events not a list", {"agent_id": "a", "task_id": "t", "events": {}}, 422, "events"),
    ("missing agent_id", {"task_id": "t", "events": [GOOD]}, 422, "agent_id"),
    ("empty task_id", batch(GOOD, task=""), 422, "task_id"),
    ("long agent_id", batch(GOOD, agent="a" * 257), 422, "agent_id"),
    ("agent_id not a string", batch(GOOD, agent=5), 422, "agent_id"),
    ("flag as string", batch(GOOD, is_snapshot_end="true"), 422, "is_snapshot_end"),
    ("flag as number", batch(GOOD, snapshot_sync_suggested=1), 422, "snapshot_sync_suggested"),
    ("body is a list", [GOOD], 422, "_schema"),
    ("too many events", batch(*[GOOD] * 11), 422, "events"),
    ("malformed JSON", b'{"agent_id": ', 400, None),
    ("NaN", b'{"agent_id": "a", "task_id": "t", "events": [{"id": NaN}]}', 400, None),
    ("huge number", b'{"agent_id": "a", "task_id": "t", "events": [{"id": 1e999}]}', 400, None),
    ("empty body", b"", 400, None),
]


@pytest.fixture
def agent(make_agent):
    return make_agent(max_batch_events=10, max_content_length=2000)


@pytest.mark.parametrize(("name", "body", "status", "field"), CASES, ids=[c[0] for c in CASES])
def test_bad_batch_is_refused_and_changes_nothing(agent, redis, name, body, status, field):
    agent.send({"id": 1, "v": "before", "index": 1})
    before = redis_state(redis)
    if isinstance(body, bytes):
        response = agent.client.post(
            "/ingest-batch",
            data=body,
            content_type="application/json",
            headers={"x-api-key": "k1"},
        )
    else:
        response = agent.post(body)
    error = response.get_json()
    assert response.status_code == status
    assert error["code"] == status
    assert error["message"]
    if field is not None:
        assert field in error["errors"], error
    assert redis_state(redis) == before


def test_body_over_max_content_length_is_413(agent, redis):
    before = redis_state(redis)
    response = agent.post(batch({"id": 1, "pad": "x" * 3000}))
    assert response.status_code == 413
    assert response.get_json()["code"] == 413
    assert redis_state(redis) == before


def test_non_json_content_type_is_415(agent, redis):
    before = redis_state(redis)
    response = agent.client.post("/ingest-batch", data="agent_id=a", headers={"x-api-key": "k1"})
    assert response.status_code == 415
    assert response.get_json()["code"] == 415
    assert redis_state(redis) == before


def test_unknown_top_level_fields_are_ignored(agent, redis):
    response = agent.post({**batch({"id": 1, "index": 1}), "extra": {"x": 1}})
    assert response.status_code == 200


def test_unknown_route_and_method_answer_json(client):
    assert client.get("/nope").get_json()["code"] == 404
    assert client.get("/ingest-batch").get_json()["code"] == 405
