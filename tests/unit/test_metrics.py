"""/metrics: counters after batches and errors, METRICS_TOKEN, and the ingest log line."""

import json
import logging
import os
import time
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from app import create_app, metrics
from app.config import ConfigError, Settings
from app.logs import AccessRecord, JsonFormatter
from tests.conftest import batch


def scrape(client, headers=None) -> dict:
    """Every sample of /metrics as {(name, sorted label pairs): value}."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_json()
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


class Meter:
    """Reads metrics before and after: the counters are global to the process."""

    def __init__(self, client):
        self.client = client
        self.before = scrape(client)

    def moved(self, name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return scrape(self.client).get(key, 0.0) - self.before.get(key, 0.0)


@pytest.fixture
def meter(client):
    return Meter(client)


def test_applied_batches_move_counters_by_their_sizes(agent, meter):
    agent.send({"id": 1, "index": 1}, {"id": 2, "index": 2})
    agent.send({"id": 3, "index": 3})
    agent.send(task="other")
    assert meter.moved("fusink_batches_total") == 3
    assert meter.moved("fusink_events_total") == 3
    assert meter.moved("fusink_rows_written_total") == 3
    assert meter.moved("fusink_rows_skipped_total") == 0


def test_stale_rows_are_counted_as_skipped(agent, meter):
    agent.send({"id": 1, "index": 20}, {"id": 2, "index": 20})
    agent.send({"id": 1, "index": 10}, {"id": 2, "index": 10}, {"id": 3, "index": 10})
    assert meter.moved("fusink_rows_written_total") == 3
    assert meter.moved("fusink_rows_skipped_total") == 2
    assert meter.moved("fusink_events_total") == 5


def test_replayed_batch_counts_its_rows_as_skipped_only_when_older(agent, meter):
    events = ({"id": 1, "index": 5}, {"id": 2, "index": 6})
    agent.send(*events)
    agent.send(*events)
    # An equal index replaces the row (ordered upsert), so a replay writes again.
    assert meter.moved("fusink_rows_written_total") == 4
    assert meter.moved("fusink_batches_total") == 2


def test_responses_are_counted_by_operation_and_status(agent, meter):
    agent.send({"id": 1})
    assert agent.post(batch({"id": 1, "index": 1.5})).status_code == 422
    assert agent.post(batch({"id": 1, "index": -1})).status_code == 422
    assert agent.post(batch(), headers={"x-api-key": "wrong"}).status_code == 401
    assert agent.status(task="never-written").status_code == 404
    assert agent.client.get("/no-such-path").status_code == 404
    assert meter.moved("fusink_http_responses_total", operation="ingestBatch", status="200") == 1
    assert meter.moved("fusink_http_responses_total", operation="ingestBatch", status="422") == 2
    assert meter.moved("fusink_http_responses_total", operation="ingestBatch", status="401") == 1
    assert meter.moved("fusink_http_responses_total", operation="getSyncStatus", status="404") == 1
    assert meter.moved("fusink_http_responses_total", operation="unmatched", status="404") == 1


def test_rejected_batches_are_not_counted_as_ingested(agent, meter):
    assert agent.post(batch({"id": 1, "index": "x"})).status_code == 422
    assert agent.post(batch({"id": 1}), headers={"x-api-key": "wrong"}).status_code == 401
    assert meter.moved("fusink_batches_total") == 0
    assert meter.moved("fusink_events_total") == 0


def test_each_request_and_script_call_is_timed_once(agent, meter):
    agent.send({"id": 1})
    agent.send({"id": 2})
    agent.status()
    request_count = "fusink_http_request_duration_seconds_count"
    assert meter.moved(request_count, operation="ingestBatch") == 2
    assert meter.moved(request_count, operation="getSyncStatus") == 1
    script_count = "fusink_redis_script_duration_seconds_count"
    assert meter.moved(script_count, script="ingest_batch") == 2
    assert (
        meter.moved("fusink_redis_script_duration_seconds_bucket", script="ingest_batch", le="+Inf")
        == 2
    )


def test_snapshots_started_and_completed_are_counted(agent, meter):
    assert agent.send({"id": 1, "index": 1}, snapshot_sync_suggested=True)["snapshot_needed"]
    agent.send({"id": 1, "index": 1})
    agent.send(is_snapshot_end=True)
    agent.send(is_snapshot_end=True)  # a replayed end marker ends nothing
    assert meter.moved("fusink_snapshots_started_total") == 1
    assert meter.moved("fusink_snapshots_completed_total") == 1


def test_rows_pruned_adds_its_count(client, meter):
    metrics.rows_pruned(7)
    metrics.rows_pruned(0)
    assert meter.moved("fusink_rows_pruned_total") == 7


def test_metrics_are_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "version=0.0.4" in response.content_type
    assert "# TYPE fusink_batches_total counter" in response.get_data(as_text=True)


@pytest.fixture
def guarded(settings, redis):
    """A client of an app with METRICS_TOKEN set."""
    return create_app(replace(settings, metrics_token="scrape-me"), redis).test_client()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer scrape-me-not"},
        {"Authorization": "Basic c2NyYXBlLW1l"},
        {"x-api-key": "scrape-me"},
        {"x-api-key": "k1"},
        {"Authorization": "Bearer k1"},
    ],
)
def test_metrics_token_is_required_when_set(guarded, headers):
    response = guarded.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["code"] == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_metrics_token_opens_metrics(guarded):
    samples = scrape(guarded, {"Authorization": "Bearer scrape-me"})
    assert ("fusink_batches_total", ()) in samples
    assert guarded.get("/healthz").status_code == 200


def test_metrics_token_does_not_change_the_spec(app, guarded):
    assert (
        guarded.application.extensions["fusink"].spec_bytes == app.extensions["fusink"].spec_bytes
    )
    operation = json.loads(app.extensions["fusink"].spec_bytes)["paths"]["/metrics"]["get"]
    assert operation["security"] == []
    assert "METRICS_TOKEN" in operation["description"]
    assert "401" in operation["responses"]


def test_metrics_token_is_read_from_the_environment():
    settings = Settings.from_env({"API_KEYS": "k1", "METRICS_TOKEN": "s3cr3t"})
    assert settings.metrics_token == "s3cr3t"
    assert Settings.from_env({"API_KEYS": "k1"}).metrics_token is None


def test_metrics_token_with_a_space_is_refused_without_echoing_it():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"API_KEYS": "k1", "METRICS_TOKEN": "two words"})
    assert list(caught.value.problems) == ["METRICS_TOKEN"]
    assert "two words" not in str(caught.value)


def test_the_request_path_writes_what_inc_and_observe_write() -> None:
    def pair(kind, **options):
        registry = CollectorRegistry()
        made = [
            kind(name, "Help.", ["op"], registry=registry, **options)
            for name in ("by_library", "by_fusink")
        ]
        return registry, made

    registry, (library, lean) = pair(Histogram, buckets=(0.001, 0.0025, 0.5, 1))
    for seconds in (0, 0.0005, 0.001, 0.0010001, 0.0025, 0.3, 1, 7.5):
        library.labels("x").observe(seconds)
        metrics.observe(lean.labels("x"), seconds)
    counters, (counted, added) = pair(Counter)
    for amount in (1, 5, 0.5):
        counted.labels("x").inc(amount)
        metrics.add(added.labels("x"), amount)

    def samples(collected, name):
        return [
            (sample.name.removeprefix(name), sample.labels, sample.value)
            for family in collected.collect()
            if family.name == name
            for sample in family.samples
        ]

    assert samples(registry, "by_fusink") == samples(registry, "by_library") != []
    assert samples(counters, "by_fusink") == samples(counters, "by_library") != []


def test_ingest_access_line_carries_the_batch_outcome(agent, caplog):
    caplog.set_level(logging.INFO, logger="fusink.access")
    agent.send({"id": 1, "index": 9})
    agent.post(
        batch({"id": 1, "index": 3}, {"id": 2, "index": 4}),
        headers={"X-Request-ID": "req-42"},
    )
    line = json.loads(JsonFormatter().format(caplog.records[-1]))
    assert line["request_id"] == "req-42"
    assert line["status"] == 200
    assert (line["agent_id"], line["task_id"], line["events"]) == ("agent-1", "orders", 2)
    assert (line["rows_written"], line["rows_skipped"]) == (1, 1)
    assert line["snapshot_needed"] is False


def test_access_line_is_a_log_record_like_any_other(agent, caplog):
    caplog.set_level(logging.INFO, logger="fusink.access")
    agent.send({"id": 1, "index": 9})
    record = caplog.records[-1]
    plain = logging.LogRecord(
        "fusink.access", logging.INFO, "", 0, "POST /ingest-batch 200", (), None
    )
    assert set(vars(plain)) <= set(vars(record))
    assert (record.levelname, record.process, record.thread) == ("INFO", os.getpid(), None)
    assert abs(record.created - time.time()) < 5
    text = logging.Formatter("%(levelname)s %(name)s %(filename)s:%(lineno)d %(message)s")
    assert text.format(record) == "INFO fusink.access :0 POST /ingest-batch 200"
    assert json.loads(JsonFormatter().format(record))["level"] == "info"


def test_access_line_is_the_json_any_record_with_its_fields_gives() -> None:
    fields = {"request_id": "r-1", "status": 200, "principal": None, "events": 2}
    fast = AccessRecord("fusink.access", "POST /ingest-batch 200", fields)
    plain = logging.getLogger("fusink.access").makeRecord(
        "fusink.access", logging.INFO, "", 0, "POST /ingest-batch 200", (), None, extra=fields
    )
    plain.created, plain.process = fast.created, fast.process
    assert JsonFormatter().format(fast) == JsonFormatter().format(plain)
    fast.added_by_a_filter = "seen"  # attributes added after the record was made count too
    assert json.loads(JsonFormatter().format(fast))["added_by_a_filter"] == "seen"


def test_log_holds_no_credential_or_row_content(agent, caplog):
    caplog.set_level(logging.DEBUG)
    secret_row = {"id": "row-key-7f3a", "card": "4111-SECRET-ROW-VALUE", "index": 1}
    agent.send(secret_row)
    agent.post(batch(secret_row), headers={"x-api-key": "WRONG-KEY-9c1d"})
    agent.post(batch({"id": 1, "index": "SECRET-BAD-INDEX"}))
    formatter = JsonFormatter()
    text = "\n".join(formatter.format(record) for record in caplog.records)
    assert "fusink.access" in text
    for secret in ("k1", "4111-SECRET-ROW-VALUE", "WRONG-KEY-9c1d", "SECRET-BAD-INDEX"):
        assert secret not in text


def test_crash_is_logged_and_counted_under_its_request_id(app, client, caplog):
    @app.get("/boom")
    def boom():
        raise RuntimeError("crash")

    meter = Meter(client)
    assert client.get("/boom", headers={"X-Request-ID": "req-500"}).status_code == 500
    crash = next(r for r in caplog.records if r.name == "fusink.errors")
    assert json.loads(JsonFormatter().format(crash))["request_id"] == "req-500"
    assert meter.moved("fusink_http_responses_total", operation="boom", status="500") == 1


def test_rows_deleted_by_a_snapshot_prune_are_counted(agent, meter):
    agent.send({"id": 1, "index": 1}, {"id": 2, "index": 2}, {"id": 3, "index": 3})
    assert agent.send(snapshot_sync_suggested=True)["snapshot_needed"]
    agent.send({"id": 1, "index": 3})
    agent.send(is_snapshot_end=True)
    assert meter.moved("fusink_rows_pruned_total") == 2
