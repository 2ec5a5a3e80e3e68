"""app/application.py: FusinkFlask matches, runs and answers as Flask does."""

import pytest
from flask import Flask, session, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter

from app import application

CASES = [
    ("POST", "/ingest-batch"),
    ("GET", "/fuagent-sync-status"),
    ("HEAD", "/fuagent-sync-status"),
    ("GET", "/healthz"),
    ("GET", "//healthz"),
    ("OPTIONS", "/ingest-batch"),
    ("GET", "/streams/agent-1/orders"),
    ("DELETE", "/streams/agent-1/orders"),
    ("GET", "/ingest-batch"),  # 405
    ("POST", "/healthz"),  # 405
    ("GET", "/nowhere"),  # 404
    ("GET", "/ui"),  # redirect to /ui/
    ("GET", "/healthz/"),  # 404: strict slashes
]


def outcome(adapter):
    try:
        rule, arguments = adapter.match(return_rule=True)
    except HTTPException as exc:
        return type(exc), getattr(exc, "new_url", None)
    return rule.rule, sorted(rule.methods), rule.endpoint, arguments


@pytest.mark.parametrize(("method", "path"), CASES)
def test_a_request_matches_as_flask_matches_it_first_and_when_remembered(app, method, path) -> None:
    for _ in range(2):  # the second time from the memo, where it was remembered
        with app.test_request_context(path, method=method) as context:
            expected = outcome(Flask.create_url_adapter(app, context.request))
            assert outcome(context.url_adapter) == expected


def request(client, method: str, path: str):
    """A request for `path` as sent: the test client would read //healthz as a host."""
    return client.open("/", method=method, environ_overrides={"PATH_INFO": path})


def test_only_rules_without_arguments_are_remembered(app, client) -> None:
    for method, path in CASES:
        request(client, method, path)
    remembered = {key: rule.rule for key, rule in app.remembered_rules.items()}
    assert remembered == {
        ("POST", "/ingest-batch"): "/ingest-batch",
        ("GET", "/fuagent-sync-status"): "/fuagent-sync-status",
        ("HEAD", "/fuagent-sync-status"): "/fuagent-sync-status",
        ("GET", "/healthz"): "/healthz",
        ("GET", "//healthz"): "/healthz",
        ("OPTIONS", "/ingest-batch"): "/ingest-batch",
    }


def test_the_memo_stops_growing_at_its_bound(app, client) -> None:
    for slashes in range(1, application.MAX_REMEMBERED + 20):
        assert request(client, "GET", "/" * slashes + "healthz").status_code == 200
    assert len(app.remembered_rules) == application.MAX_REMEMBERED


def test_url_for_builds_through_the_adapter_flask_binds(app) -> None:
    with app.test_request_context("/healthz"):
        assert url_for("ops.get_health") == "/healthz"
        assert url_for("streams.get_stream", agent_id="a 1", task_id="t") == "/streams/a%201/t"
        assert url_for("ops.get_health", _external=True) == "http://localhost/healthz"


def test_trusted_hosts_are_checked_by_flask_adapter(app, client) -> None:
    app.config["TRUSTED_HOSTS"] = ["fusink.example"]
    with app.test_request_context("/healthz", base_url="http://fusink.example") as context:
        assert isinstance(context.url_adapter, MapAdapter)
    assert client.get("/healthz", base_url="http://fusink.example").status_code == 200
    refused = client.get("/healthz", base_url="http://elsewhere.example")
    assert refused.status_code == 400
    assert refused.is_json


def test_plain_views_and_hooks_are_remembered_and_coroutines_are_not(app, client) -> None:
    assert client.get("/healthz").status_code == 200
    assert app.view_functions["ops.get_health"] in app.plain_functions
    assert all(hook in app.plain_functions for hook in app.after_request_funcs[None])

    async def coroutine_view():
        return {}

    for _ in range(2):  # Flask's answer each time: async views need its "async" extra
        with pytest.raises(RuntimeError, match="async"):
            app.ensure_sync(coroutine_view)
    assert coroutine_view not in app.plain_functions


def test_there_are_no_sessions_to_write_or_send(app, client) -> None:
    with app.test_request_context("/healthz"):
        assert dict(session) == {}
        with pytest.raises(RuntimeError, match="session is unavailable"):
            session["user"] = "someone"
    response = client.get("/healthz")
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
