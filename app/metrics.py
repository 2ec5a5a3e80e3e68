"""Metric names, what increments them, and rendering them in Prometheus text format.

Under gunicorn, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before the app is
imported, so every worker writes its values to its own mmap file there and
render() sums all of them: /metrics is the same whichever worker serves it.
Elsewhere (flask run, the test client) the values live in this process.
"""

from __future__ import annotations

import time
from bisect import bisect_left

from flask import Flask, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)

from . import pid

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Chosen by prometheus_client when it was first imported, from PROMETHEUS_MULTIPROC_DIR.
MULTIPROCESS = values.ValueClass._multiprocess
if MULTIPROCESS:
    # Each value checks the pid for a fork on every change: the cached one, not a
    # system call each time (a batch changes about ten values).
    values.ValueClass = values.MultiProcessValue(pid.current)

# Multiprocess mode has no *_created samples; leave them out in both modes alike.
disable_created_metrics()
REGISTRY = CollectorRegistry()

BATCHES = Counter("fusink_batches", "Batches applied.", registry=REGISTRY)
EVENTS = Counter("fusink_events", "Events in applied batches.", registry=REGISTRY)
ROWS_WRITTEN = Counter("fusink_rows_written", "Rows upserted.", registry=REGISTRY)
ROWS_SKIPPED = Counter(
    "fusink_rows_skipped",
    "Rows not written because the stored row has a higher index (stale events).",
    registry=REGISTRY,
)
SNAPSHOTS_STARTED = Counter(
    "fusink_snapshots_started",
    "Snapshots started: batches answered with snapshot_needed: true.",
    registry=REGISTRY,
)
SNAPSHOTS_COMPLETED = Counter(
    "fusink_snapshots_completed",
    "Snapshots ended by the agent's end marker (a replayed marker is not counted).",
    registry=REGISTRY,
)
ROWS_PRUNED = Counter(
    "fusink_rows_pruned",
    "Rows deleted after a completed snapshot because the snapshot did not send them.",
    registry=REGISTRY,
)
RESPONSES = Counter(
    "fusink_http_responses",
    "HTTP responses by operation (the OpenAPI operationId) and status code.",
    ["operation", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "fusink_http_request_duration_seconds",
    "Time from the start of a request to its response, by operation.",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
SCRIPT_SECONDS = Histogram(
    "fusink_redis_script_duration_seconds",
    "Time of one Lua script call to Redis, by script.",
    ["script"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)


def batch_applied(events: int, result) -> None:
    """Count one applied batch from its event count and its BatchResult."""
    # Each write is a locked write to the worker's metrics file: skip adding zero.
    add(BATCHES)
    if events:
        add(EVENTS, events)
    if result.rows_written:
        add(ROWS_WRITTEN, result.rows_written)
    if result.rows_skipped:
        add(ROWS_SKIPPED, result.rows_skipped)
    if result.snapshot_needed:
        add(SNAPSHOTS_STARTED)
    if result.snapshot_ended:
        add(SNAPSHOTS_COMPLETED)


def rows_pruned(count: int) -> None:
    """Count rows deleted by a snapshot's prune."""
    if count:
        add(ROWS_PRUNED, count)


# The request path writes about eight values a batch. Counter.inc() and
# Histogram.observe() check their argument and the metric's labels on every call,
# and observe() walks the buckets in Python; these make the same writes without
# that (prometheus_client is pinned; tests/unit/test_metrics.py compares them).


def add(counter: Counter, amount: float = 1) -> None:
    """counter.inc(amount), for a counter without labels or a labelled child."""
    counter._value.inc(amount)


def observe(histogram: Histogram, seconds: float) -> None:
    """histogram.observe(seconds), for a histogram child: its sum and its bucket."""
    histogram._sum.inc(seconds)
    histogram._buckets[bisect_left(histogram._upper_bounds, seconds)].inc(1)


class time_script:  # named for how it reads: `with metrics.time_script("ingest_batch"):`
    """Observe how long a call to `script` takes."""

    __slots__ = ("histogram", "started")

    def __init__(self, script: str):
        self.histogram = _script_timers[(script,)]

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc_info) -> bool:
        observe(self.histogram, time.perf_counter() - self.started)
        return False


class _Children(dict):
    """A metric's labelled children by label values, looked up once each
    (labels() takes a lock and builds its key on every call)."""

    def __init__(self, metric):
        super().__init__()
        self.metric = metric

    def __missing__(self, values: tuple):
        child = self[values] = self.metric.labels(*values)
        return child


_script_timers = _Children(SCRIPT_SECONDS)


def render() -> bytes:
    """Every metric in Prometheus text format, summed over all workers when under gunicorn."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def register(app: Flask) -> None:
    """Count every response by operation and status, and time it."""
    operations: dict[str | None, str] = {}

    def operation_of(endpoint: str | None) -> str:
        # The label set stays small: one value per route, "unmatched" for the rest.
        if endpoint not in operations:
            view = current_app.view_functions.get(endpoint) if endpoint else None
            meta = getattr(view, "openapi", None)
            operations[endpoint] = meta["operation_id"] if meta else endpoint or "unmatched"
        return operations[endpoint]

    responses, durations = _Children(RESPONSES), _Children(REQUEST_SECONDS)

    @app.after_request
    def count_response(response):
        operation = operation_of(request._get_current_object().endpoint)
        add(responses[operation, str(response.status_code)])
        started = g._get_current_object().get("started")  # set by logs.py when the request began
        if started is not None:
            observe(durations[(operation,)], time.perf_counter() - started)
        return response
