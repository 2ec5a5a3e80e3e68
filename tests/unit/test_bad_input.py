"""Bad input gets a clear JSON 4xx that names the problem, and changes nothing."""

import io
import json

import pytest
from flask import request

from app.bodies import WHOLE_BODY, FusinkRequest
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


# (name, raw body, the problem fusink must name, where)
MALFORMED = [
    ("bad key", b"{bad", "unexpected character, expected a string key", "line 1, column 2"),
    ("truncated", b'{"agent_id": "a",', "unexpected end of data", "line 1, column 18"),
    (
        "trailing garbage",
        b'{"agent_id": "a"} x',
        "unexpected content after document",
        "line 1, column 19",
    ),
    ("NaN", b'{"events": [{"id": NaN}]}', "NaN is not a JSON number", "line 1, column 20"),
    (
        "Infinity",
        b'{"events": [\n {"id": Infinity}]}',
        "Infinity is not a JSON number",
        "line 2, column 9",
    ),
    (
        "-Infinity",
        b'{"events": [{"id": -Infinity}]}',
        "Infinity is not a JSON number",
        "line 1, column 20",
    ),
    ("invalid UTF-8", b'{"agent_id": "a\xff"}', "invalid UTF-8 byte 0xff", "line 1, column 16"),
    (
        "huge number",
        b'{"id": 1e999}',
        "number is infinity when parsed as double",
        "line 1, column 8",
    ),
    (
        "long integer, then NaN",
        b'{"id": 12345678901234567890, "x": NaN}',
        "NaN is not a JSON number",
        "line 1, column 35",
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "problem", "where"), MALFORMED, ids=[c[0] for c in MALFORMED]
)
def test_malformed_json_is_named_with_its_position(agent, redis, name, body, problem, where):
    before = redis_state(redis)
    response = agent.client.post(
        "/ingest-batch", data=body, content_type="application/json", headers={"x-api-key": "k1"}
    )
    assert response.status_code == 400
    assert response.get_json()["message"].startswith(f"Malformed JSON: {problem} at {where}")
    assert redis_state(redis) == before


def test_empty_body_is_named(agent):
    response = agent.client.post(
        "/ingest-batch", data=b" ", content_type="application/json", headers={"x-api-key": "k1"}
    )
    assert response.get_json()["message"] == "Malformed JSON: the body is empty."


def test_malformed_json_shows_a_short_excerpt_only(agent):
    body = b'{"agent_id": "' + b"a" * 500 + b'", "secret": "s' + b"e" * 500 + b'"}x'
    response = agent.client.post(
        "/ingest-batch", data=body, content_type="application/json", headers={"x-api-key": "k1"}
    )
    message = response.get_json()["message"]
    assert message.endswith("(near 'eeeeeeee\"}x').")
    assert len(message) < 120


def chunked_post(agent, body: bytes):
    """POST a body of unknown length, as a server that has already de-chunked it passes it."""
    return agent.client.post(
        "/ingest-batch",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={"x-api-key": "k1", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_chunked_body_over_max_content_length_is_413(agent, redis):
    before = redis_state(redis)
    response = chunked_post(agent, json.dumps(batch({"id": 1, "pad": "x" * 3000})).encode())
    assert response.status_code == 413
    assert response.get_json()["code"] == 413
    assert redis_state(redis) == before


def test_chunked_body_of_exactly_max_content_length_is_taken(agent, redis):
    body = json.dumps(batch({"id": 1, "index": 1, "pad": ""})).encode()
    body = body.replace(b'"pad": ""', b'"pad": "' + b"x" * (2000 - len(body)) + b'"')
    assert len(body) == 2000
    assert chunked_post(agent, body).status_code == 200
    assert redis.hget("fusink:{agent-1:orders}:checkpoint", "index") == "1"


class Unreadable(io.BytesIO):
    def read(self, size=-1):
        raise AssertionError("the body was read again")

    readinto = readline = read


def test_a_body_the_worker_read_in_full_is_not_read_again(agent, redis):
    body = json.dumps(batch({"id": 1, "index": 7})).encode()
    response = agent.client.post(
        "/ingest-batch",
        input_stream=Unreadable(),
        content_type="application/json",
        headers={"x-api-key": "k1", "Content-Length": str(len(body))},
        environ_overrides={WHOLE_BODY: body},
    )
    assert response.status_code == 200
    assert redis.hget("fusink:{agent-1:orders}:checkpoint", "index") == "7"


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


def test_a_request_limit_set_in_a_view_wins_over_the_app_limit(app):
    with app.test_request_context("/ingest-batch", method="POST", data=b"{}"):
        assert request.max_content_length == app.config["MAX_CONTENT_LENGTH"] > 0
        request.max_content_length = 5
        assert request.max_content_length == 5
    # Outside an app, Werkzeug's default: no limit of its own.
    assert FusinkRequest.from_values("/").max_content_length is None
