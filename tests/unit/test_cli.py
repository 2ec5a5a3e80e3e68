"""`flask streams ...`: tables, --json, unknown streams, confirmations."""

import json
import re

from app.cli import streams_command
from tests.conftest import batch

CHECKPOINT = "fusink:{agent-1:orders}:checkpoint"


def seed(agent):
    for task, events in (("orders", 3), ("users", 1)):
        rows = [{"id": n, "index": 10 + n} for n in range(events)]
        assert agent.post(batch(*rows, task=task)).status_code == 200


def test_list_prints_a_table(agent, runner):
    seed(agent)
    result = runner.invoke(streams_command, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "AGENT", "TASK", "CHECKPOINT", "ROWS", "EVENTS", "UPDATED", "(UTC)", "SNAPSHOT",
    ]  # fmt: skip
    assert sorted(line.split()[:5] for line in lines[1:3]) == [
        ["agent-1", "orders", "12", "3", "3"],
        ["agent-1", "users", "10", "1", "1"],
    ]
    assert lines[-1] == "2 streams"


def test_list_json_is_the_api_shape(agent, runner):
    seed(agent)
    result = runner.invoke(streams_command, ["list", "--json", "--limit", "1"])
    assert result.exit_code == 0, result.output
    streams = json.loads(result.output)
    assert len(streams) == 1
    assert set(streams[0]) >= {"agent_id", "task_id", "checkpoint", "rows", "snapshot"}


def test_show_prints_the_stream_and_its_keys(agent, runner):
    seed(agent)
    result = runner.invoke(streams_command, ["show", "agent-1", "orders"])
    assert result.exit_code == 0, result.output
    shown = dict(line.split(None, 1) for line in result.output.splitlines() if "key" not in line)
    assert (shown["checkpoint"], shown["rows"], shown["snapshot.state"]) == ("12", "3", "none")
    assert re.search(r"^row_key_fields +id$", result.output, re.MULTILINE)
    assert "fusink:{agent-1:orders}:rows" in result.output
    shown = json.loads(
        runner.invoke(streams_command, ["show", "agent-1", "orders", "--json"]).output
    )
    assert (shown["checkpoint"], shown["rows"]) == (12, 3)


def test_unknown_stream_is_a_clear_error(runner):
    for args in (["show"], ["snapshot"], ["drop", "--yes"], ["reset", "--remove", "--yes"]):
        result = runner.invoke(streams_command, [args[0], "agent-1", "nope", *args[1:]])
        assert result.exit_code == 1, args
        assert "no stream with agent_id 'agent-1' and task_id 'nope'" in result.output


def test_reset_sets_or_removes_the_checkpoint(agent, runner, redis):
    seed(agent)
    result = runner.invoke(streams_command, ["reset", "agent-1", "orders", "--index", "5", "--yes"])
    assert result.exit_code == 0, result.output
    assert redis.hget(CHECKPOINT, "index") == "5"
    result = runner.invoke(streams_command, ["reset", "agent-1", "orders", "--remove"], input="y\n")
    assert result.exit_code == 0, result.output
    assert not redis.hexists(CHECKPOINT, "index")
    assert agent.status().status_code == 404
    assert redis.hlen("fusink:{agent-1:orders}:rows") == 3


def test_reset_needs_exactly_one_of_index_and_remove(agent, runner):
    seed(agent)
    for args in ([], ["--index", "1", "--remove"], ["--index", "-1"]):
        result = runner.invoke(streams_command, ["reset", "agent-1", "orders", *args, "--yes"])
        assert result.exit_code == 2, args


def test_declined_confirmation_changes_nothing(agent, runner, redis):
    seed(agent)
    result = runner.invoke(streams_command, ["drop", "agent-1", "orders"], input="n\n")
    assert result.exit_code == 1
    assert "Aborted" in result.output
    assert redis.hget(CHECKPOINT, "index") == "12"
    result = runner.invoke(streams_command, ["reset", "agent-1", "orders", "--remove"], input="n\n")
    assert result.exit_code == 1
    assert redis.hget(CHECKPOINT, "index") == "12"


def test_drop_removes_the_stream(agent, runner, redis):
    seed(agent)
    result = runner.invoke(streams_command, ["drop", "agent-1", "orders", "--yes", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "agent_id": "agent-1", "task_id": "orders", "rows_deleted": 3,
    }  # fmt: skip
    assert redis.keys("fusink:{agent-1:orders}*") == []
    assert redis.zrange("fusink:streams", 0, -1) == ["{agent-1:users}"]


def test_snapshot_request_is_answered_on_the_next_batch(agent, runner, redis):
    seed(agent)
    result = runner.invoke(streams_command, ["snapshot", "agent-1", "orders"])
    assert result.exit_code == 0, result.output
    assert "snapshot requested" in result.output
    assert redis.hget(CHECKPOINT, "snapshot_state") == "requested"
    assert agent.send({"id": 9, "index": 99})["snapshot_needed"] is True
