"""The /streams read and admin API on fakeredis: pages, 404s, scopes, odd ids."""

import json
from urllib.parse import quote

import pytest

from app.config import Credential, Settings
from tests.conftest import AgentActions, batch

ADMIN = {"x-api-key": "k1"}
READER = {"x-api-key": "reader"}
INGESTER = {"x-api-key": "ingester"}
AGENT_1_ADMIN = {"x-api-key": "agent-1-admin"}
INDEX = "fusink:streams"
ODD_AGENT = "sim agent:{ü☃}%2F/x"
ODD_TASK = "orders:{eu} 100%/é"


@pytest.fixture
def settings():
    return Settings(
        api_keys=(
            Credential("key#0", "k1"),
            Credential("key#1", "reader", scopes=frozenset({"read"})),
            Credential("key#2", "ingester", scopes=frozenset({"ingest"})),
            Credential(
                "key#3",
                "agent-1-admin",
                scopes=frozenset({"read", "admin"}),
                agents=frozenset({"agent-1"}),
            ),
        )
    )


def path(agent_id, task_id, *rest):
    return "/".join(["/streams", quote(agent_id, safe=""), quote(task_id, safe=""), *rest])


def send(agent, agent_id="agent-1", task_id="orders", *events, **flags):
    response = agent.post(batch(*events, agent=agent_id, task=task_id, **flags))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def walk(client, url, key, limit, headers=READER):
    """Every item of every page, following next_cursor."""
    items, cursor, pages = [], None, 0
    while True:
        query = {"limit": limit} if cursor is None else {"limit": limit, "cursor": cursor}
        response = client.get(url, query_string=query, headers=headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert len(body[key]) <= limit
        items += body[key]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages


def test_no_streams_is_an_empty_page(client):
    response = client.get("/streams", headers=READER)
    assert response.status_code == 200
    assert response.get_json() == {"streams": [], "next_cursor": None}


def test_stream_shows_checkpoint_counters_and_snapshot_state(agent, client):
    send(agent, "agent-1", "orders", {"id": 1, "index": 5}, {"id": 2, "index": 9})
    response = client.get(path("agent-1", "orders"), headers=READER)
    assert response.status_code == 200
    body = response.get_json()
    assert body["updated_at"] > 0
    del body["updated_at"]
    assert body == {
        "agent_id": "agent-1",
        "task_id": "orders",
        "tag": "{agent-1:orders}",
        "checkpoint": 9,
        "events": 2,
        "batches": 1,
        "rows": 2,
        "row_key_fields": ["id"],
        "snapshot": {"state": "none", "generation": 0, "deferred": False},
    }


def test_snapshot_of_a_stream_without_checkpoint_is_shown(agent, client):
    send(agent, "agent-1", "orders", {"id": 1}, snapshot_sync_suggested=True)
    response = client.get(path("agent-1", "orders"), headers=READER)
    assert response.status_code == 200
    snapshot = response.get_json()["snapshot"]
    assert (snapshot["state"], "started_index" in snapshot) == ("running", False)
    assert response.get_json()["checkpoint"] is None


def test_streams_are_listed_most_recently_updated_first_across_pages(agent, client, redis):
    names = [f"t{n:02}" for n in range(7)]
    for name in names:
        send(agent, "agent-1", name, {"id": 1})
    # Last-update scores with ties, set with a plain ZADD.
    scores = {"t00": 10, "t01": 30, "t02": 30, "t03": 30, "t04": 20, "t05": 40, "t06": 30}
    redis.zadd(INDEX, {"{agent-1:" + name + "}": score for name, score in scores.items()})
    listed, pages = walk(client, "/streams", "streams", limit=2)
    assert pages == 4
    order = [s["task_id"] for s in listed]
    assert order == ["t05", "t06", "t03", "t02", "t01", "t04", "t00"]


def test_a_key_limited_to_agents_lists_only_theirs(agent, client):
    for agent_id in ("agent-1", "agent-2", "agent-1"):
        send(agent, agent_id, f"task-{agent_id}-x", {"id": 1})
    send(agent, "agent-2", "other", {"id": 1})
    listed, _ = walk(client, "/streams", "streams", limit=1, headers=AGENT_1_ADMIN)
    assert [s["agent_id"] for s in listed] == ["agent-1"]


@pytest.mark.parametrize(
    "query, field",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"cursor": "not a cursor"}, "cursor"),
        ({"cursor": "e30"}, "cursor"),
    ],
)
def test_bad_page_query_is_400_naming_it(client, query, field):
    response = client.get("/streams", query_string=query, headers=READER)
    assert response.status_code == 400
    assert field in response.get_json()["errors"]


def test_rows_are_paged_and_each_is_listed_once(agent, client):
    events = [{"id": n, "name": f"row {n}", "index": n} for n in range(1, 251)]
    send(agent, "agent-1", "orders", *events)
    listed, pages = walk(client, path("agent-1", "orders", "rows"), "rows", limit=100)
    assert pages >= 3  # HSCAN may answer fewer rows than asked for
    assert sorted(int(r["key"]) for r in listed) == list(range(1, 251))
    first = next(r for r in listed if r["key"] == "7")
    assert first == {"key": "7", "index": 7, "row": {"id": 7, "name": "row 7", "index": 7}}


def test_a_small_stream_is_paged_by_the_limit_too(agent, client):
    # Redis answers a small hash in one HSCAN reply, whatever the COUNT.
    send(agent, "agent-1", "orders", *({"id": n} for n in range(5)))
    listed, pages = walk(client, path("agent-1", "orders", "rows"), "rows", limit=2)
    assert pages == 3
    assert sorted(r["key"] for r in listed) == ["0", "1", "2", "3", "4"]


def test_bad_row_cursor_is_400(agent, client):
    send(agent, "agent-1", "orders", {"id": 1})
    url = path("agent-1", "orders", "rows")
    response = client.get(url, query_string={"cursor": "abc"}, headers=READER)
    assert response.status_code == 400


def test_row_is_served_as_stored(agent, client):
    body = '{"agent_id":"agent-1","task_id":"orders","events":[{"id":"a/b","big":123456789012345678901234567890,"f":1.0}]}'  # noqa: E501
    response = agent.client.post(
        "/ingest-batch", data=body, content_type="application/json", headers=ADMIN
    )
    assert response.status_code == 200
    response = client.get(path("agent-1", "orders", "rows", quote("a/b", safe="")), headers=READER)
    assert response.status_code == 200
    assert response.data == b'{"id":"a/b","big":123456789012345678901234567890,"f":1.0}'
    page = client.get(path("agent-1", "orders", "rows"), headers=READER)
    assert b'"row":{"id":"a/b","big":123456789012345678901234567890,"f":1.0}' in page.data
    assert json.loads(page.data)["rows"][0]["index"] is None


@pytest.mark.parametrize(
    "method, suffix",
    [
        ("get", ()),
        ("get", ("rows",)),
        ("get", ("rows", "1")),
        ("post", ("snapshot",)),
        ("delete", ()),
    ],
)
def test_unknown_stream_is_404(client, method, suffix):
    response = getattr(client, method)(path("agent-1", "nope", *suffix), headers=ADMIN)
    assert response.status_code == 404
    assert response.get_json()["code"] == 404


def test_unknown_row_is_404(agent, client):
    send(agent, "agent-1", "orders", {"id": 1})
    response = client.get(path("agent-1", "orders", "rows", "2"), headers=READER)
    assert response.status_code == 404


@pytest.mark.parametrize(
    "method, suffix, headers, status",
    [
        ("get", (), INGESTER, 403),
        ("get", (), {}, 401),
        ("get", ("rows",), INGESTER, 403),
        ("post", ("snapshot",), READER, 403),
        ("delete", (), READER, 403),
        ("get", (), AGENT_1_ADMIN, 403),  # a key for agent-1 reading agent-2
        ("delete", (), AGENT_1_ADMIN, 403),
    ],
)
def test_scopes_and_agents_are_enforced(agent, client, redis, method, suffix, headers, status):
    send(agent, "agent-2", "orders", {"id": 1})
    response = getattr(client, method)(path("agent-2", "orders", *suffix), headers=headers)
    assert response.status_code == status
    assert redis.exists("fusink:{agent-2:orders}:rows")


def test_listing_needs_the_read_scope(client):
    assert client.get("/streams", headers=INGESTER).status_code == 403


def test_delete_drops_every_key_and_the_agent_starts_over(agent, client, redis):
    send(agent, "agent-1", "orders", {"id": 1, "index": 4}, {"id": 2, "index": 5})
    send(agent, "agent-1", "other", {"id": 1, "index": 4})
    response = client.delete(path("agent-1", "orders"), headers=ADMIN)
    assert response.status_code == 200
    assert response.get_json() == {"agent_id": "agent-1", "task_id": "orders", "rows_deleted": 2}
    assert redis.keys("fusink:{agent-1:orders}*") == []
    assert redis.zrange(INDEX, 0, -1) == ["{agent-1:other}"]
    assert agent.status().status_code == 404
    assert client.get(path("agent-1", "orders"), headers=READER).status_code == 404
    assert client.delete(path("agent-1", "orders"), headers=ADMIN).status_code == 404
    # A batch after the drop starts the stream again, listed again.
    send(agent, "agent-1", "orders", {"id": 3, "index": 1})
    assert agent.status().get_json() == {"index": 1}


def test_odd_ids_work_percent_encoded(client):
    agent = AgentActions(client)
    send(agent, ODD_AGENT, ODD_TASK, {"id": "k/1%", "index": 3})
    for url in (path(ODD_AGENT, ODD_TASK), path(ODD_AGENT, ODD_TASK, "rows")):
        response = client.get(url, headers=READER)
        assert response.status_code == 200, url
    stream = client.get(path(ODD_AGENT, ODD_TASK), headers=READER).get_json()
    assert (stream["agent_id"], stream["task_id"], stream["checkpoint"]) == (ODD_AGENT, ODD_TASK, 3)
    row = client.get(path(ODD_AGENT, ODD_TASK, "rows", quote("k/1%", safe="")), headers=READER)
    assert row.get_json() == {"id": "k/1%", "index": 3}
    listed = client.get("/streams", headers=READER).get_json()["streams"]
    assert [(s["agent_id"], s["task_id"]) for s in listed] == [(ODD_AGENT, ODD_TASK)]
    # The same ids, taken apart at the wrong '/', are another (unknown) stream.
    assert client.get(f"/streams/{quote(ODD_AGENT)}/x", headers=READER).status_code == 404
    response = client.delete(path(ODD_AGENT, ODD_TASK), headers=ADMIN)
    assert response.get_json()["rows_deleted"] == 1


def test_every_streams_operation_is_in_the_spec(app):
    from app import spec

    document = spec.build(app)
    operations = {
        op["operationId"]: (method, url, op["tags"])
        for url, item in document["paths"].items()
        for method, op in item.items()
    }
    names = (
        "listStreams",
        "getStream",
        "listRows",
        "getRow",
        "listChanges",
        "requestSnapshot",
        "deleteStream",
    )
    assert {name: operations[name][:2] for name in names} == {
        "listStreams": ("get", "/streams"),
        "getStream": ("get", "/streams/{agent_id}/{task_id}"),
        "listRows": ("get", "/streams/{agent_id}/{task_id}/rows"),
        "getRow": ("get", "/streams/{agent_id}/{task_id}/rows/{row_key}"),
        "listChanges": ("get", "/streams/{agent_id}/{task_id}/changes"),
        "requestSnapshot": ("post", "/streams/{agent_id}/{task_id}/snapshot"),
        "deleteStream": ("delete", "/streams/{agent_id}/{task_id}"),
    }
    assert all(operations[name][2] == ["streams"] for name in names)


@pytest.mark.parametrize(
    "environ, expected",
    [
        # The raw request line wins: %2F stays inside its segment.
        ({"PATH_INFO": "/streams/a/b/t", "RAW_URI": "/streams/a%2Fb/t?x=1"}, "/streams/a%2Fb/t"),
        # Under a SCRIPT_NAME, and raw UTF-8 from a lax client, re-encoded.
        (
            {"PATH_INFO": "/streams/\xc3\xa9/t", "REQUEST_URI": "/app/streams/\xc3\xa9/t"},
            "/streams/%C3%A9/t",
        ),
        # No raw path (or one that does not match): each decoded segment re-encoded.
        ({"PATH_INFO": "/streams/a b/100%"}, "/streams/a%20b/100%25"),
        ({"PATH_INFO": "/streams/a/t", "RAW_URI": "/other"}, "/streams/a/t"),
    ],
)
def test_stream_paths_are_routed_as_the_client_encoded_them(environ, expected):
    from app.routes.streams import encoded_path

    assert encoded_path(environ) == expected
