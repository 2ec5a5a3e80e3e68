"""The worker's bridge: an ASGI request as the WSGI environ and body the app sees;
the worker's garbage collector settings."""

import asyncio
import json
import subprocess
import sys
import textwrap

from app.bodies import WHOLE_BODY
from app.worker import YOUNG_COLLECTION_THRESHOLD, WsgiInLoop, build_environ


def scope(**fields) -> dict:
    base = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/ingest-batch",
        "raw_path": b"/ingest-batch",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"sink:8000"), (b"content-type", b"application/json")],
        "server": ("10.0.0.2", 8000),
        "client": ("10.0.0.9", 51234),
    }
    return base | fields


def serve(app: WsgiInLoop, request: dict, chunks: list[bytes]) -> tuple[list[dict], int]:
    """Run one request through `app`; (messages sent, receive() calls made)."""
    sent, calls = [], 0

    async def receive():
        nonlocal calls
        calls += 1
        body = chunks[calls - 1]
        return {"type": "http.request", "body": body, "more_body": calls < len(chunks)}

    async def send(message):
        sent.append(message)

    asyncio.run(app(request, receive, send))
    return sent, calls


class Recorder:
    """A WSGI app that keeps the environ and body it was called with."""

    config = {"MAX_CONTENT_LENGTH": 10}

    def __init__(self):
        self.environ, self.body, self.closed = None, None, False

    def __call__(self, environ, start_response):
        self.environ, self.body = environ, environ["wsgi.input"].read()
        start_response("201 CREATED", [("Content-Type", "text/plain"), ("X-Request-ID", "r1")])
        return self

    def __iter__(self):
        return iter([b"a", b"bc"])

    def close(self):
        self.closed = True


def test_environ_carries_path_bytes_exactly_as_pep_3333_asks() -> None:
    # %2F stays apart from '/', and a byte that is not UTF-8 survives (as latin-1).
    raw = b"/streams/a%2Fb/t%FF"
    environ = build_environ(scope(path="/streams/a/b/t\ufffd", raw_path=raw))
    assert environ["PATH_INFO"] == "/streams/a/b/t\xff"
    assert environ["RAW_URI"] == "/streams/a%2Fb/t%FF"


def test_environ_has_the_query_headers_and_addresses() -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"12"),
        (b"x-api-key", b"k1"),
        (b"x-forwarded-for", b"1.1.1.1"),
        (b"x-forwarded-for", b"2.2.2.2"),
    ]
    environ = build_environ(scope(query_string=b"agent_id=a&task_id=t", headers=headers))
    assert environ["QUERY_STRING"] == "agent_id=a&task_id=t"
    assert environ["RAW_URI"] == "/ingest-batch?agent_id=a&task_id=t"
    assert environ["CONTENT_TYPE"] == "application/json"
    assert environ["CONTENT_LENGTH"] == "12"
    assert environ["HTTP_X_API_KEY"] == "k1"
    assert environ["HTTP_X_FORWARDED_FOR"] == "1.1.1.1,2.2.2.2"
    assert "HTTP_CONTENT_TYPE" not in environ
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("10.0.0.9", "51234")
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("10.0.0.2", "8000")
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_the_app_gets_the_whole_body_and_its_answer_goes_out_as_given() -> None:
    recorder = Recorder()
    declared = scope(headers=[(b"content-length", b"9")])
    sent, _ = serve(WsgiInLoop(recorder), declared, [b"12345", b"6789"])
    assert recorder.body == b"123456789"
    assert recorder.environ[WHOLE_BODY] == b"123456789"  # the request class takes it as is
    assert recorder.closed
    assert sent == [
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"Content-Type", b"text/plain"), (b"X-Request-ID", b"r1")],
        },
        {"type": "http.response.body", "body": b"abc"},
    ]


def test_a_body_is_read_one_byte_past_max_content_length_and_no_further() -> None:
    recorder = Recorder()
    chunked = scope(headers=[(b"transfer-encoding", b"chunked")])
    _, calls = serve(WsgiInLoop(recorder), chunked, [b"123456", b"78901", b"never read"])
    assert calls == 2
    assert recorder.body == b"12345678901"  # 11 bytes: the app can tell it is over 10
    assert WHOLE_BODY not in recorder.environ  # read through the stream, which says 413


def test_a_request_without_a_body_is_not_read() -> None:
    recorder = Recorder()
    _, calls = serve(WsgiInLoop(recorder), scope(method="GET", headers=[]), [b"never read"])
    assert calls == 0
    assert recorder.body == b""


def test_a_declared_length_over_the_limit_reads_no_body() -> None:
    recorder = Recorder()
    declared = scope(headers=[(b"content-length", b"11")])
    _, calls = serve(WsgiInLoop(recorder), declared, [b"12345678901"])
    assert calls == 0
    assert recorder.environ["CONTENT_LENGTH"] == "11"  # Flask answers 413 from this


COLLECTIONS_WHILE_A_BATCH_IS_PARSED = textwrap.dedent(
    """
    import gc, json, sys, orjson
    from app.worker import tune_collector

    def young_collections_during_a_batch():
        body = orjson.dumps([{"id": n, "index": n} for n in range(5000)])
        before = gc.get_stats()[0]["collections"]
        events = orjson.loads(body)  # 5,000 dicts alive at once, as a batch's events are
        return gc.get_stats()[0]["collections"] - before, len(events)

    default = young_collections_during_a_batch()
    tune_collector()
    tuned = young_collections_during_a_batch()
    print(json.dumps([default, tuned, gc.get_threshold(), gc.get_freeze_count()]))
    """
)


def test_the_worker_does_not_collect_young_objects_while_a_batch_is_parsed() -> None:
    # In a process of its own: the collector's settings are the interpreter's.
    done = subprocess.run(
        [sys.executable, "-c", COLLECTIONS_WHILE_A_BATCH_IS_PARSED],
        capture_output=True,
        text=True,
        check=True,
    )
    default, tuned, threshold, frozen = json.loads(done.stdout)
    assert default[0] >= 5 and default[1] == 5000  # 700 at a time: 7 collections
    assert tuned == [0, 5000]
    assert threshold[0] == YOUNG_COLLECTION_THRESHOLD
    assert frozen > 1000  # the modules imported before: left out of every collection
