"""The operator's pages on fakeredis: what they list, escaping, access, CSP, paging."""

import base64
import hashlib
import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from app import create_app
from app.config import Credential, RowKeyRule, Settings
from tests.conftest import AgentActions, basic, batch

READER = {"x-api-key": "reader"}
INGESTER = {"x-api-key": "ingester"}
AGENT_1_READER = {"x-api-key": "agent-1-reader"}
SCRIPT_AGENT = "<script>document.title='owned'</script>"


@pytest.fixture
def settings():
    return Settings(
        api_keys=(
            Credential("key#0", "k1"),
            Credential("key#1", "reader", scopes=frozenset({"read"})),
            Credential("key#2", "ingester", scopes=frozenset({"ingest"})),
            Credential(
                "key#3", "agent-1-reader", scopes=frozenset({"read"}), agents=frozenset({"agent-1"})
            ),
        ),
        basic_auth_users=(Credential("user:ops", "ops:pw", scopes=frozenset({"read"})),),
    )


class Page(HTMLParser):
    """A page's table rows as (row class, [cell texts]), its links and its text."""

    def __init__(self, html: str):
        super().__init__()
        self.rows, self.links, self.scripts, self.text = [], {}, [], []
        self._row = self._cell = self._href = self._script = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self._row = (attrs.get("class") or "", [])
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "a":
            self._href = (attrs["href"], [])
        elif tag == "script":
            self._script = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row[1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "a" and self._href:
            self.links.setdefault("".join(self._href[1]).strip(), []).append(self._href[0])
            self._href = None
        elif tag == "script":
            self.scripts.append("".join(self._script))
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self._script.append(data)
            return
        self.text.append(data)
        for open_text in (self._cell, self._href and self._href[1]):
            if open_text is not None:
                open_text.append(data)

    def body_rows(self) -> list[tuple[str, list[str]]]:
        return [row for row in self.rows if row[1] and row[1][0] not in ("Agent", "Key")]

    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def send(agent, agent_id, task_id, *events, **flags):
    response = agent.post(batch(*events, agent=agent_id, task=task_id, **flags))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def get_page(client, url, headers=READER, **query) -> Page:
    response = client.get(url, query_string=query, headers=headers)
    assert response.status_code == 200, response.data[:500]
    assert response.mimetype == "text/html"
    return Page(response.data.decode())


def stream_url(agent_id, task_id):
    return {"agent_id": agent_id, "task_id": task_id}


def test_the_page_lists_each_stream_with_its_counters_and_snapshot(agent, client):
    send(agent, "agent-1", "orders", {"id": 1, "index": 5}, {"id": 2, "index": 9})
    send(agent, "agent-2", "users", {"id": 7, "index": 3}, snapshot_sync_suggested=True)
    page = get_page(client, "/ui/")
    assert [cells for _, cells in page.body_rows()] == [
        ["agent-2", "users", "3", "0 s ago", "1", "1", "1", "running started 0 s ago"],
        ["agent-1", "orders", "9", "0 s ago", "2", "2", "1", "none"],
    ]
    assert "2 shown · 0 stale" in page.visible()


def test_the_page_lists_streams_in_the_order_and_pages_of_list_streams(agent, client, redis):
    for n in range(5):
        send(agent, "agent-1", f"t{n}", {"id": 1})
    scores = {"{agent-1:t" + str(n) + "}": s for n, s in enumerate((3, 1, 4, 1, 5))}
    redis.zadd("fusink:streams", scores)
    shown, query = [], {"limit": 2}
    while True:
        page = get_page(client, "/ui/", **query)
        shown += [cells[1] for _, cells in page.body_rows()]
        if "Next page →" not in page.links:
            break
        query = {
            "limit": 2,
            "cursor": re.search(r"cursor=([^&]+)", page.links["Next page →"][0])[1],
        }
        assert "First page" in get_page(client, "/ui/", **query).links
    listed = client.get("/streams", headers=READER).get_json()["streams"]
    assert shown == [s["task_id"] for s in listed] == ["t4", "t2", "t0", "t3", "t1"]


def test_ids_and_rows_are_shown_as_text_never_as_markup(agent, client):
    row = {"id": "<b>1</b>", "note": "</code><script>alert(1)</script>", "index": 1}
    send(agent, SCRIPT_AGENT, "<i>task</i>", row)
    listing = client.get("/ui/", headers=READER)
    query = stream_url(SCRIPT_AGENT, "<i>task</i>")
    stream = client.get("/ui/stream", query_string=query, headers=READER)
    for response in (listing, stream):
        html = response.data.decode()
        assert "<script>document" not in html and "<i>" not in html and "<b>" not in html
        page = Page(html)
        assert len(page.scripts) == 1  # the page's own
        assert SCRIPT_AGENT in page.visible() and "<i>task</i>" in page.visible()
    assert '"note":"</code><script>alert(1)</script>"' in Page(stream.data.decode()).visible()


def test_a_stream_not_updated_for_ui_stale_after_s_is_highlighted(settings, redis):
    client = create_app(replace(settings, ui_stale_after_s=60), redis).test_client()
    agent = AgentActions(client)
    send(agent, "agent-1", "fresh", {"id": 1})
    send(agent, "agent-1", "quiet", {"id": 1})
    key = "fusink:{agent-1:quiet}:checkpoint"
    redis.hset(key, "updated_at", int(redis.hget(key, "updated_at")) - 10 * 60 * 1000)
    page = get_page(client, "/ui/")
    rows = {cells[1]: (css, cells[3]) for css, cells in page.body_rows()}
    assert rows["quiet"] == ("stale", "10 min ago stale")
    assert rows["fresh"] == ("", "0 s ago")
    assert "1 stale (no update for over 1 min)" in page.visible()
    stream = get_page(client, "/ui/stream", **stream_url("agent-1", "quiet"))
    assert "Stale: the last update was 10 min ago, more than 1 min" in stream.visible()
    fresh = get_page(client, "/ui/stream", **stream_url("agent-1", "fresh"))
    assert "Stale" not in fresh.visible()


def test_pages_admit_by_csp_only_their_own_script(agent, client):
    send(agent, "agent-1", "orders", {"id": 1})
    for url, query in (("/ui/", {}), ("/ui/stream", stream_url("agent-1", "orders"))):
        response = client.get(url, query_string=query, headers=READER)
        policy = dict(
            directive.strip().split(" ", 1)
            for directive in response.headers["Content-Security-Policy"].split(";")
        )
        (script,) = Page(response.data.decode()).scripts
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert policy["script-src"] == f"'sha256-{digest}'"
        assert policy["default-src"] == "'none'" and policy["style-src"] == "'self'"
        assert "location.reload" in script
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_browser_without_credentials_is_asked_for_basic_ones(client):
    response = client.get("/ui/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert response.get_json()["code"] == 401


def test_a_basic_user_with_read_scope_sees_the_page(agent, client):
    send(agent, "agent-1", "orders", {"id": 1})
    page = get_page(client, "/ui/", headers=basic("ops", "pw"))
    assert [cells[0] for _, cells in page.body_rows()] == ["agent-1"]
    assert "as user:ops" in page.visible()
    assert client.get("/ui/", headers=basic("ops", "wrong")).status_code == 401


def test_the_pages_need_read_scope(agent, client):
    send(agent, "agent-1", "orders", {"id": 1})
    assert client.get("/ui/", headers=INGESTER).status_code == 403
    query = stream_url("agent-1", "orders")
    assert client.get("/ui/stream", query_string=query, headers=INGESTER).status_code == 403


def test_a_key_limited_to_agents_sees_only_theirs(agent, client):
    send(agent, "agent-1", "orders", {"id": 1})
    send(agent, "agent-2", "orders", {"id": 1})
    page = get_page(client, "/ui/", headers=AGENT_1_READER)
    assert [cells[0] for _, cells in page.body_rows()] == ["agent-1"]
    query = stream_url("agent-2", "orders")
    response = client.get("/ui/stream", query_string=query, headers=AGENT_1_READER)
    assert response.status_code == 403 and response.get_json()["code"] == 403


def test_the_stream_page_shows_its_state_and_pages_through_its_rows(agent, client):
    send(agent, "a/b", "orders", *({"id": n, "v": f"row {n}", "index": 10 + n} for n in range(5)))
    first = get_page(client, "/ui/stream", **stream_url("a/b", "orders"), limit=2)
    assert "First page" not in first.links
    cards = first.visible()
    assert "Checkpoint 14" in cards and "Rows 5" in cards and "Batches 1" in cards
    stored = {cells[0]: cells[1] for _, cells in first.rows if len(cells) == 2}
    assert stored["index"] == "14" and stored["agent_id"] == "a/b"
    assert "redis-cli HGETALL 'fusink:{a%2Fb:orders}:checkpoint'" in cards
    seen, page = [], first
    for _ in range(5):
        seen += [(cells[0], cells[1], cells[2]) for _, cells in page.body_rows() if len(cells) == 3]
        if "Next page →" not in page.links:
            break
        response = client.get(page.links["Next page →"][0], headers=READER)
        page = Page(response.data.decode())
        assert "First page" in page.links
    assert sorted(seen) == [
        (str(n), str(10 + n), f'{{"id":{n},"v":"row {n}","index":{10 + n}}}') for n in range(5)
    ]


def test_the_stream_page_shows_the_row_key_fields_its_stream_recorded(settings, redis):
    rule = RowKeyRule(fields=("id", "region"), task="orders")
    client = create_app(replace(settings, row_key_rules=(rule,)), redis).test_client()
    agent = AgentActions(client)
    send(agent, "agent-1", "orders", {"id": 1, "region": "eu"})
    send(agent, "agent-1", "users", {"id": 1})
    orders = get_page(client, "/ui/stream", **stream_url("agent-1", "orders"))
    assert "Row-key fields: id, region" in orders.visible()
    users = get_page(client, "/ui/stream", **stream_url("agent-1", "users"))
    assert "Row-key fields: id" in users.visible()
    # A stream written before streams recorded their row-key fields shows none.
    redis.hdel("fusink:{agent-1:users}:checkpoint", "row_key_fields")
    users = get_page(client, "/ui/stream", **stream_url("agent-1", "users"))
    assert "Row-key fields" not in users.visible()


def test_a_completed_snapshot_shows_what_its_prune_did(agent, client):
    send(agent, "agent-1", "orders", {"id": 1, "index": 1}, {"id": 2, "index": 2})
    assert send(agent, "agent-1", "orders", snapshot_sync_suggested=True)["snapshot_needed"]
    send(agent, "agent-1", "orders", {"id": 1, "index": 1})
    send(agent, "agent-1", "orders", is_snapshot_end=True)
    (row,) = get_page(client, "/ui/").body_rows()
    assert row[1][-1] == "completed 1 pruned, 1 kept · 0 s ago"


def test_a_prune_under_way_shows_its_progress(agent, client, redis):
    send(agent, "agent-1", "orders", {"id": 1})
    # What a process that died mid-prune leaves in the checkpoint hash.
    fields = {"snapshot_state": "pruning", "prune_deleted": 1234, "snapshot_generation": 1}
    redis.hset("fusink:{agent-1:orders}:checkpoint", mapping=fields)
    (row,) = get_page(client, "/ui/").body_rows()
    assert row[1][-1] == "pruning 1,234 rows deleted so far"


@pytest.mark.parametrize(
    "query, status, field",
    [
        ({"task_id": "orders"}, 400, "agent_id"),
        ({"agent_id": "agent-1", "task_id": "orders", "cursor": "x"}, 400, "cursor"),
        ({"agent_id": "agent-1", "task_id": "orders", "limit": 0}, 400, "limit"),
        ({"agent_id": "agent-1", "task_id": "nope"}, 404, None),
    ],
)
def test_a_bad_stream_page_request_is_a_json_error(agent, client, query, status, field):
    send(agent, "agent-1", "orders", {"id": 1})
    response = client.get("/ui/stream", query_string=query, headers=READER)
    assert response.status_code == status
    body = response.get_json()
    assert body["code"] == status and (field is None or field in body["errors"])


def test_the_stylesheet_is_served_by_fusink(client):
    with client.get("/ui/static/ui.css") as response:
        assert response.status_code == 200 and response.mimetype == "text/css"
        assert b".stale" in response.data
