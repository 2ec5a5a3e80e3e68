"""Row-key fields per stream: ROW_KEY_RULES, the recorded fields, and the 409 on a change."""

import re
from dataclasses import replace

import pytest

from app import create_app, spec
from app.cli import streams_command
from app.config import RowKeyRule
from tests.conftest import batch, redis_state

RULES = (
    RowKeyRule(fields=("order_id",), task="mysql-orders*"),
    RowKeyRule(fields=("order_id", "line_no"), agent="agent-eu-*", task="*items*"),
)


def checkpoint(agent_id, task_id):
    return f"fusink:{{{agent_id}:{task_id}}}:checkpoint"


def rows(agent_id, task_id):
    return f"fusink:{{{agent_id}:{task_id}}}:rows"


@pytest.fixture
def agent(make_agent):
    return make_agent(row_key_rules=RULES)


def test_each_stream_is_keyed_by_its_rule_and_records_the_fields(agent, redis):
    agent.send({"id": 1, "index": 1}, agent="agent-eu-1", task="users")
    agent.send({"order_id": 7, "index": 1}, agent="agent-eu-1", task="mysql-orders")
    agent.send({"order_id": 7, "line_no": 2, "index": 1}, agent="agent-eu-1", task="pg-items")
    assert redis.hkeys(rows("agent-eu-1", "users")) == ["1"]
    assert redis.hkeys(rows("agent-eu-1", "mysql-orders")) == ["7"]
    assert redis.hkeys(rows("agent-eu-1", "pg-items")) == ["[7,2]"]
    recorded = [
        redis.hget(checkpoint("agent-eu-1", task), "row_key_fields")
        for task in ("users", "mysql-orders", "pg-items")
    ]
    assert recorded == ['["id"]', '["order_id"]', '["order_id","line_no"]']


def test_event_without_its_streams_key_field_is_422_naming_it(agent, redis):
    agent.send({"order_id": 7, "line_no": 1, "index": 1}, agent="agent-eu-1", task="pg-items")
    before = redis_state(redis)
    body = batch(
        {"order_id": 8, "line_no": 1, "index": 2},
        {"order_id": 9, "index": 3, "id": 9},
        agent="agent-eu-1",
        task="pg-items",
    )
    response = agent.post(body)
    assert response.status_code == 422
    error = response.get_json()
    assert list(error["errors"]) == ["events.1.line_no"]
    assert "events.1.line_no" in error["message"]
    assert "order_id, line_no" in error["errors"]["events.1.line_no"][0]
    assert redis_state(redis) == before


def stream_state(redis) -> dict:
    """Every key but the P:streams scores, which a batch refreshes before it is applied."""
    state = redis_state(redis)
    state["fusink:streams"] = [member for member, _ in state["fusink:streams"]]
    return state


def test_changed_row_key_fields_are_409_and_change_nothing(make_agent, redis):
    make_agent().send({"id": 1, "index": 1}, task="mysql-orders")
    before = stream_state(redis)
    rekeyed = make_agent(row_key_rules=RULES)
    response = rekeyed.post(batch({"order_id": 5, "id": 5, "index": 2}, task="mysql-orders"))
    assert response.status_code == 409
    error = response.get_json()
    assert (error["code"], error["status"]) == (409, "Conflict")
    message = error["message"]
    assert "'agent-1'/'mysql-orders'" in message
    assert "keyed by id," in message and "key it by order_id" in message
    assert "flask streams drop" in message and "DELETE /streams/" in message
    assert stream_state(redis) == before
    # The end marker of a snapshot carries no events, and is refused all the same.
    assert rekeyed.post(batch(task="mysql-orders", is_snapshot_end=True)).status_code == 409
    assert stream_state(redis) == before


def test_dropped_stream_starts_over_with_the_new_fields(make_agent, redis):
    make_agent().send({"id": 1, "index": 1}, task="mysql-orders")
    rekeyed = make_agent(row_key_rules=RULES)
    assert rekeyed.post(batch({"order_id": 5}, task="mysql-orders")).status_code == 409
    dropped = rekeyed.client.delete("/streams/agent-1/mysql-orders", headers={"x-api-key": "k1"})
    assert dropped.status_code == 200
    rekeyed.send({"order_id": 5, "index": 1}, task="mysql-orders")
    assert redis.hkeys(rows("agent-1", "mysql-orders")) == ["5"]
    assert redis.hget(checkpoint("agent-1", "mysql-orders"), "row_key_fields") == '["order_id"]'


def test_stream_without_recorded_fields_adopts_the_current_rule(make_agent, redis):
    make_agent().send({"order_id": 5, "id": 5, "index": 1}, task="mysql-orders")
    redis.hdel(checkpoint("agent-1", "mysql-orders"), "row_key_fields")  # written before
    make_agent(row_key_rules=RULES).send({"order_id": 6, "index": 2}, task="mysql-orders")
    assert redis.hget(checkpoint("agent-1", "mysql-orders"), "row_key_fields") == '["order_id"]'
    assert sorted(redis.hkeys(rows("agent-1", "mysql-orders"))) == ["5", "6"]


def test_bad_stream_id_is_named_without_row_key_errors(agent):
    response = agent.post(batch({"order_id": 1}, agent=5, task="pg-items"))
    assert response.status_code == 422
    assert list(response.get_json()["errors"]) == ["agent_id"]


def test_streams_api_and_cli_show_each_streams_fields(agent, redis):
    agent.send({"id": 1}, agent="agent-eu-1", task="users")
    agent.send({"order_id": 7, "line_no": 2}, agent="agent-eu-1", task="pg-items")
    redis.hdel(checkpoint("agent-eu-1", "users"), "row_key_fields")  # written before
    listed = agent.client.get("/streams", headers={"x-api-key": "k1"}).get_json()["streams"]
    shown = {stream["task_id"]: stream["row_key_fields"] for stream in listed}
    assert shown == {"users": None, "pg-items": ["order_id", "line_no"]}
    one = agent.client.get("/streams/agent-eu-1/pg-items", headers={"x-api-key": "k1"})
    assert one.get_json()["row_key_fields"] == ["order_id", "line_no"]
    runner = agent.client.application.test_cli_runner()
    output = runner.invoke(streams_command, ["show", "agent-eu-1", "pg-items"]).output
    assert re.search(r"^row_key_fields +order_id, line_no$", output, re.MULTILINE)


def test_spec_documents_the_conflict_and_the_fields_every_stream_needs(settings, redis):
    document = spec.build(create_app(replace(settings, row_key_rules=RULES), redis))
    responses = document["paths"]["/ingest-batch"]["post"]["responses"]
    assert responses["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ApiError"
    }
    event = document["components"]["schemas"]["BatchEvent"]
    assert "required" not in event  # id, order_id, (order_id, line_no): none in common
    assert {"id", "order_id", "line_no"} <= set(event["properties"])
    stream = document["components"]["schemas"]["Stream"]["properties"]
    assert stream["row_key_fields"]["items"] == {"type": "string"}
