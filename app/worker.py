"""The gunicorn worker: gunicorn's asyncio worker, calling the Flask app in its event loop.

gunicorn's gthread worker hands every keep-alive request from its poller thread to a
pool thread and back (a selector registration, a future, a pipe write and two thread
switches per request), which cost more CPU than Flask itself. gunicorn's asyncio
worker reads, parses (with the C parser) and writes every connection in one loop;
once a request's body has arrived in full, the app is called right there, with the
body in memory, and its answer goes out in one write. A slow client therefore holds
no thread and blocks nobody while it sends.

A request called in the loop runs in a greenlet (app/portal.py): when it waits on
Redis it pauses, the loop serves the other requests meanwhile, and their commands
go to Redis together (app/store/pipeline.py).

With `threads` above 1, bodies of POOLED_BODY_BYTES or more are given to a pool of
`threads` threads, with blocking Redis connections of their own, so that the loop's
parsing and validation of one large batch does not hold up the small requests.
"""

import asyncio
import gc
import io
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_to_bytes

from gunicorn.workers.gasgi import ASGIWorker

from . import portal
from .bodies import WHOLE_BODY

POOLED_BODY_BYTES = 8192  # about 60 events of a typical row

# Python collects its young objects whenever 700 more container objects (dicts,
# lists) are alive than at its last collection. Each event of a batch is a dict,
# alive until the batch is stored, so batches of hundreds of events set off
# collections that walked them all, and walked them again in the older generations:
# 1-2 % of a worker's CPU at 100 events a batch, 6 % at 1,000. At 10,000 a
# collection comes after a few large batches, when most of their objects are gone.
YOUNG_COLLECTION_THRESHOLD = 10_000


class FlaskWorker(ASGIWorker):
    """gunicorn's ASGI worker, serving the WSGI app that gunicorn loaded."""

    @classmethod
    def check_config(cls, cfg, log):
        pass  # unlike ASGI apps, this one does use `threads`

    def load_wsgi(self):
        super().load_wsgi()
        threads = self.cfg.threads
        pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self.asgi = WsgiInLoop(self.asgi, pool)
        tune_collector()


def tune_collector() -> None:
    """Collect young objects less often, and leave what the worker inherited from
    the master (the loaded app) out of every collection, as Python's documentation
    advises for a process that forks without exec."""
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


class WsgiInLoop:
    """An ASGI app that calls a WSGI app with the request body read in full.

    A body is read at most one byte past the app's MAX_CONTENT_LENGTH, so the app
    sees that it is too large (413) without the server holding all of it.
    """

    def __init__(self, wsgi_app, pool: ThreadPoolExecutor | None = None):
        self.wsgi_app = wsgi_app
        self.pool = pool  # for large bodies; None: every call in the loop
        self.max_body = getattr(wsgi_app, "config", {}).get("MAX_CONTENT_LENGTH")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close"})
            return
        environ = build_environ(scope)
        body = b""
        if "CONTENT_LENGTH" in environ or "HTTP_TRANSFER_ENCODING" in environ:
            body, whole = await self.read_body(environ, receive)
            environ["wsgi.input"] = io.BytesIO(body)
            if whole:
                environ[WHOLE_BODY] = body
        if self.pool is not None:
            environ["wsgi.multithread"] = True
        if self.pool is None or len(body) < POOLED_BODY_BYTES:
            status_line, headers, chunks = await portal.call(self.call_app, environ)
        else:
            loop = asyncio.get_running_loop()
            status_line, headers, chunks = await loop.run_in_executor(
                self.pool, self.call_app, environ
            )
        await send(
            {
                "type": "http.response.start",
                "status": int(status_line[:3]),
                # As the app spelled them: some clients match header names by case.
                "headers": [
                    (name.encode("latin-1"), value.encode("latin-1")) for name, value in headers
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"".join(chunks)})

    async def read_body(self, environ: dict, receive) -> tuple[bytes, bool]:
        """The body, and whether it is all of it and within MAX_CONTENT_LENGTH."""
        limit = self.max_body
        declared = environ.get("CONTENT_LENGTH")
        if limit is not None and declared is not None and int(declared) > limit:
            return b"", False  # the app answers 413 from the declared length alone
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away; the app's answer is dropped.
                return b"".join(chunks), False
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                return b"".join(chunks), False
            if not message.get("more_body"):
                return b"".join(chunks), True

    def call_app(self, environ):
        answer = []

        def start_response(status, headers, exc_info=None):
            answer[:] = [status, headers]
            return answer_write_unsupported

        result = self.wsgi_app(environ, start_response)
        try:
            chunks = list(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return answer[0], answer[1], chunks


def answer_write_unsupported(data):
    raise NotImplementedError("the WSGI write() callable is not supported; return the body")


# Header name -> environ key, computed once per name; bounded, as clients choose names.
_environ_keys: dict[bytes, str] = {}


def environ_key(name: bytes) -> str:
    key = _environ_keys.get(name)
    if key is None:
        if len(_environ_keys) > 1000:
            _environ_keys.clear()
        key = name.decode("latin-1").upper().replace("-", "_")
        if key not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            key = "HTTP_" + key
        _environ_keys[name] = key
    return key


def build_environ(scope) -> dict:
    """The WSGI environ (PEP 3333) of an ASGI HTTP request, as gunicorn's sync workers
    build it, with an empty body (the caller reads it)."""
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
    query = scope["query_string"].decode("latin-1")
    server = scope.get("server") or ("localhost", 80)
    # PEP 3333: the percent-decoded bytes, as latin-1; byte for byte, unlike scope["path"]
    path = unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf-8").decode("latin-1"),
        "PATH_INFO": path.decode("latin-1"),
        "QUERY_STRING": query,
        "RAW_URI": raw_path.decode("latin-1") + ("?" + query if query else ""),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": "HTTP/" + scope["http_version"],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    for name, value in scope["headers"]:
        key = environ_key(name)
        text = value.decode("latin-1")
        # Repeated headers join with a comma (RFC 9110 5.3), as gunicorn's do.
        environ[key] = environ[key] + "," + text if key in environ else text
    return environ
