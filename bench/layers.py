"""CPU per request of each layer of fusink's ingest and status paths, in process.

Calls the WSGI app directly (no gunicorn, no sockets but Redis's), then each layer
on its own, and prints microseconds of CPU per call. Metrics run in multiprocess
mode, as under gunicorn. Usage: python bench/layers.py [--redis-url URL] [-n N]
"""

import argparse
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

# As gunicorn.conf.py does, before prometheus_client is first imported.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="fusink-layers-"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import floor  # noqa: E402  # the bare Flask views bench/run.py serves as the floor
import orjson  # noqa: E402
from flask import Flask  # noqa: E402
from werkzeug.datastructures import MultiDict  # noqa: E402

from app import create_app, logs, metrics  # noqa: E402
from app.config import Settings  # noqa: E402
from app.routes import fuagent  # noqa: E402
from app.rows import Columns  # noqa: E402
from app.store import BatchResult  # noqa: E402

API_KEY = "benchkey"
EVENT = {
    "id": 1,
    "name": "User 1",
    "email": "user1@example.com",
    "balance": 12.5,
    "active": True,
    "index": 1_700_000_000_001,
}
BODY = {
    "agent_id": "layers",
    "task_id": "s0",
    "is_snapshot_end": False,
    "snapshot_sync_suggested": False,
    "events": [EVENT],
}


def environ(method: str, path: str, body: bytes = b"", query: str = "") -> dict:
    """A WSGI environ as gunicorn builds it for one request."""
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_X_API_KEY": API_KEY,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if body:
        env.update(CONTENT_TYPE="application/json", CONTENT_LENGTH=str(len(body)))
    return env


def call(wsgi_app, method: str, path: str, body: bytes = b"", query: str = "") -> None:
    """One request through the WSGI app; its response read and closed."""
    statuses = []
    result = wsgi_app(environ(method, path, body, query), lambda s, h, e=None: statuses.append(s))
    b"".join(result)
    result.close()
    assert statuses[0].startswith("200"), statuses


def cpu_us(work, count: int) -> float:
    """The CPU microseconds one `work()` takes: the least of 7 runs, as other
    processes on the machine only ever add to it."""
    runs = []
    for _ in range(7):
        started = time.process_time()
        for _ in range(count):
            work()
        runs.append((time.process_time() - started) / count * 1e6)
    return min(runs)


def after_request(app: Flask, name: str):
    """The app's after-request hook called `name`."""
    return next(hook for hook in app.after_request_funcs[None] if hook.__name__ == name)


def before_request(app: Flask, name: str):
    """The app's before-request hook called `name`."""
    return next(hook for hook in app.before_request_funcs[None] if hook.__name__ == name)


def layers(app: Flask, count: int) -> list[tuple[str, float]]:
    """(layer, CPU µs per call) for the whole requests, then each layer alone."""
    body = orjson.dumps(BODY)
    query = "agent_id=layers&task_id=s0"
    state = app.extensions["fusink"]
    store = state.get_store()
    bare = floor.app
    result = BatchResult(checkpoint=1, snapshot_needed=False, rows_written=1, rows_skipped=0)
    ingest = (app, "POST", "/ingest-batch", body)
    call(*ingest)  # connects, loads the script, lists the stream
    found = [
        ("request: fusink ingest, 1 event", lambda: call(*ingest)),
        ("request: fusink status", lambda: call(app, "GET", "/fuagent-sync-status", b"", query)),
        (
            "request: bare Flask, parse body, answer {}",
            lambda: call(bare, "POST", "/ingest-batch", body),
        ),
        ("request: bare Flask GET, answer {}", lambda: call(bare, "GET", "/fuagent-sync-status")),
    ]
    context = app.test_request_context(
        "/ingest-batch", method="POST", data=body, headers={"x-api-key": API_KEY}
    )
    with context:
        response = app.response_class(b"{}", mimetype="application/json")
        found += [
            ("JSON parse (orjson provider)", lambda: app.json.loads(body)),
            ("auth: API key check", state.authenticator.authenticate),
            ("marshmallow: BatchSchema.load, 1 event", lambda: state.batch_schema.load(BODY)),
            (
                "marshmallow: SyncStatusQuerySchema.load",
                lambda: fuagent.status_query.load(
                    MultiDict({"agent_id": "layers", "task_id": "s0"})
                ),
            ),
            (
                "redis-py + Redis: ingest script, 1 event",
                lambda: store.apply_batch(
                    "layers",
                    "s0",
                    Columns([1], [1700000000001], [orjson.dumps(EVENT)]),
                    "1700000000001",
                    suggested=False,
                    snapshot_end=False,
                    now_ms=1,
                ),
            ),
            ("redis-py + Redis: status HMGET", lambda: store.get_checkpoint("layers", "s0")),
            ("redis-py + Redis: PING", store.client.ping),
            ("metrics: batch_applied", lambda: metrics.batch_applied(1, result)),
            (
                "metrics: response counter + duration histogram",
                lambda: after_request(app, "count_response")(response),
            ),
            (
                "logs: request id, access line (JSON, to /dev/null)",
                lambda: after_request(app, "finish_request")(
                    before_request(app, "start_request")() or response
                ),
            ),
            (
                "response: IngestResultSchema.dump + JSON",
                lambda: app.json.response(fuagent.ingest_result.dump(result)),
            ),
        ]
        measured = [(name, cpu_us(work, count)) for name, work in found]
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", help="an existing Redis (default: start one)")
    parser.add_argument("-n", type=int, default=1000, help="calls per measurement")
    args = parser.parse_args()
    import run  # the benchmark's Redis starter

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fusink-")))
        url = args.redis_url or stack.enter_context(run.redis_server(tmp, None))
        root = logging.getLogger()
        handler = logging.StreamHandler(stack.enter_context(open(os.devnull, "w")))
        handler.setFormatter(logs.JsonFormatter())
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        settings = Settings.from_env(
            {"REDIS_URL": url, "API_KEYS": API_KEY, "KEY_PREFIX": "fusink-layers"}
        )
        for name, micros in layers(create_app(settings), args.n):
            print(f"| {name} | {micros:,.1f} |")


if __name__ == "__main__":
    main()
