"""Real gunicorn, two workers, real Redis: /metrics sums every worker, logs are JSON lines."""

import base64
import http.client
import json
import os
import signal
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

API_KEY = "itest-api-key-5d1e9a"
BASIC_USER, BASIC_PASSWORD = "itest-user", "itest-password-77c2"
METRICS_TOKEN = "itest-metrics-token-0b4f"
ROW_SECRET = "ROW-SECRET-VALUE-3e8d"
WRONG_KEY = "itest-wrong-key-a61c"
SECRETS = (API_KEY, BASIC_PASSWORD, METRICS_TOKEN, ROW_SECRET, WRONG_KEY)
SCRAPE = {"Authorization": f"Bearer {METRICS_TOKEN}"}

CONNECTIONS = 8
BATCHES_PER_CONNECTION = 5
MAX_ROUNDS = 25


@pytest.fixture(scope="module")
def server(gunicorn_server, redis_server):
    return gunicorn_server(
        {
            "REDIS_URL": redis_server.url,
            "API_KEYS": API_KEY,
            "BASIC_AUTH_USERS": f"{BASIC_USER}:{BASIC_PASSWORD}",
            "METRICS_TOKEN": METRICS_TOKEN,
        },
        workers=2,
    )


def request(server, method, path, body=None, headers=None):
    """One request over a new connection: (status, headers, body bytes)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        return send(connection, method, path, body, headers)
    finally:
        connection.close()


def send(connection, method, path, body=None, headers=None):
    headers = dict(headers or {})
    if body is not None:
        body = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def batch_body(n: int, task: str) -> dict:
    """Batch n: one row written, and one stale event for the same row skipped."""
    return {
        "agent_id": "agent-gunicorn",
        "task_id": task,
        "events": [
            {"id": f"r{n}", "secret": ROW_SECRET, "index": n + 1},
            {"id": f"r{n}", "secret": ROW_SECRET, "index": 0},
        ],
    }


def send_round(server, first: int, task: str) -> None:
    """Send CONNECTIONS x BATCHES_PER_CONNECTION batches, each connection kept alive."""
    failures = []

    def worker(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for k in range(BATCHES_PER_CONNECTION):
                n = first + offset * BATCHES_PER_CONNECTION + k
                headers = {"x-api-key": API_KEY, "task-id": task}
                status, _, body = send(
                    connection, "POST", "/ingest-batch", batch_body(n, task), headers
                )
                if status != 200:
                    failures.append((status, body))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]


def log_lines(server) -> list[dict]:
    """Every line gunicorn and the app logged, each parsed as one JSON object."""
    lines = []
    for number, line in enumerate(server.log_text().splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except ValueError:
            pytest.fail(f"log line {number} is not JSON: {line!r}")
    return lines


def ingest_pids(server, task: str) -> set[int]:
    return {
        line["pid"]
        for line in log_lines(server)
        if line.get("path") == "/ingest-batch" and line.get("task_id") == task
    }


def scrape(server) -> dict:
    """/metrics over a new connection, as {(name, sorted label pairs): value}."""
    status, headers, body = request(server, "GET", "/metrics", headers=SCRAPE)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def totals(samples: dict) -> dict:
    return {
        "batches": samples[("fusink_batches_total", ())],
        "events": samples[("fusink_events_total", ())],
        "written": samples[("fusink_rows_written_total", ())],
        "skipped": samples[("fusink_rows_skipped_total", ())],
        "ok": samples.get(
            ("fusink_http_responses_total", (("operation", "ingestBatch"), ("status", "200"))), 0
        ),
        "timed": samples.get(
            ("fusink_redis_script_duration_seconds_count", (("script", "ingest_batch"),)), 0
        ),
    }


def test_metrics_total_every_batch_whichever_worker_served_it(server):
    before = totals(scrape(server))
    sent = 0
    # Keep sending until the log shows both workers took batches (usually the first round).
    for _ in range(MAX_ROUNDS):
        send_round(server, sent, "many-workers")
        sent += CONNECTIONS * BATCHES_PER_CONNECTION
        if len(ingest_pids(server, "many-workers")) >= 2:
            break
    assert len(ingest_pids(server, "many-workers")) == 2, "one worker served every batch"
    expected = {"batches": sent, "events": 2 * sent, "written": sent, "skipped": sent}
    expected.update(ok=sent, timed=sent)
    for _ in range(6):
        after = totals(scrape(server))
        assert {name: after[name] - before[name] for name in after} == expected


def test_metrics_count_every_error_status_across_workers(server):
    key = ("fusink_http_responses_total", (("operation", "ingestBatch"), ("status", "401")))
    before = scrape(server).get(key, 0)
    for _ in range(10):
        status, _, _ = request(
            server, "POST", "/ingest-batch", batch_body(1, "errors"), {"x-api-key": WRONG_KEY}
        )
        assert status == 401
    for _ in range(4):
        assert scrape(server)[key] - before == 10


def test_metrics_need_the_token(server):
    status, headers, body = request(server, "GET", "/metrics")
    assert status == 401
    assert json.loads(body)["code"] == 401
    status, _, _ = request(server, "GET", "/metrics", headers={"x-api-key": API_KEY})
    assert status == 401


def test_counts_survive_a_worker_being_killed(server):
    booted = boot_pids(server)
    before = totals(scrape(server))
    send_round(server, 10_000, "killed-worker")
    victim = max(ingest_pids(server, "killed-worker"))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(boot_pids(server) - booted) < 1:
        assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
        time.sleep(0.1)
    sent = CONNECTIONS * BATCHES_PER_CONNECTION
    for _ in range(4):
        after = totals(scrape(server))
        assert after["batches"] - before["batches"] == sent
        assert after["written"] - before["written"] == sent


def boot_pids(server) -> set[int]:
    return {
        int(line["message"].rsplit(" ", 1)[-1])
        for line in log_lines(server)
        if line.get("logger") == "gunicorn.error"
        and line["message"].startswith("Booting worker with pid")
    }


def test_request_id_is_honoured_and_logged(server):
    headers = {"x-api-key": API_KEY, "X-Request-ID": "itest-request-0042"}
    status, response_headers, _ = request(
        server, "POST", "/ingest-batch", batch_body(7, "request-id"), headers
    )
    assert status == 200
    assert response_headers["X-Request-ID"] == "itest-request-0042"
    status, response_headers, _ = request(server, "GET", "/healthz")
    generated = response_headers["X-Request-ID"]
    assert len(generated) >= 16
    logged = {line.get("request_id"): line for line in log_lines(server)}
    line = logged["itest-request-0042"]
    assert line["logger"] == "fusink.access"
    assert (line["agent_id"], line["task_id"], line["events"]) == (
        "agent-gunicorn",
        "request-id",
        2,
    )
    assert (line["rows_written"], line["rows_skipped"], line["snapshot_needed"]) == (1, 1, False)
    assert line["status"] == 200 and line["duration_ms"] >= 0
    assert logged[generated]["path"] == "/healthz"


def test_log_is_json_lines_without_secrets_or_rows(server):
    basic = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    for headers in (
        {"Authorization": f"Basic {basic}"},
        {"Authorization": f"Bearer {API_KEY}"},
        {"x-api-key": WRONG_KEY},
        {"Authorization": f"Bearer {WRONG_KEY}"},
    ):
        request(server, "POST", "/ingest-batch", batch_body(3, "secrets"), headers)
    bad = batch_body(4, "secrets")
    bad["events"][0]["index"] = ROW_SECRET
    status, _, _ = request(server, "POST", "/ingest-batch", bad, {"x-api-key": API_KEY})
    assert status == 422
    request(server, "GET", "/metrics", headers={"Authorization": f"Bearer {WRONG_KEY}"})
    scrape(server)

    lines = log_lines(server)
    assert any(
        line["logger"] == "gunicorn.error" and line["message"].startswith("Booting worker")
        for line in lines
    )
    access = [line for line in lines if line["logger"] == "fusink.access"]
    assert access and all(line["request_id"] for line in access)
    assert any(line["principal"] == f"user:{BASIC_USER}" for line in access)
    text = server.log_text()
    for secret in SECRETS:
        assert secret not in text
