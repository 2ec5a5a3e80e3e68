"""The /streams read and admin endpoints, and routing ids that hold '/' or '%'."""

from __future__ import annotations

import base64
import binascii
import time
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

from flask import Blueprint, Flask, current_app, g
from werkzeug.routing import BaseConverter, ValidationError

from .. import rows, schemas, snapshots
from ..auth import require
from ..errors import ApiError
from ..spec import doc
from ..state import get_store
from . import load_query

PREFIX = "/streams/"
# Characters a raw request path may keep as they are; anything else is re-encoded.
PATH_SAFE = "/%:@!$&'()*+,;=-._~"

bp = Blueprint("streams", __name__)
stream_query = schemas.StreamListQuerySchema()
row_query = schemas.RowListQuerySchema()
change_query = schemas.ChangeListQuerySchema()
stream_page = schemas.StreamPageSchema()
stream_schema = schemas.StreamSchema()
dropped_stream = schemas.DroppedStreamSchema()


class StreamIdConverter(BaseConverter):
    """One path segment, percent-decoded as UTF-8: `a%2Fb` is the id `a/b`."""

    def to_python(self, value: str) -> str:
        try:
            return unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise ValidationError() from None  # not UTF-8: no such stream (404)

    def to_url(self, value: str) -> str:
        return quote(value, safe="")


class RawStreamPaths:
    """WSGI middleware: route /streams/... on the path as the client encoded it.

    The server decodes PATH_INFO, which would turn an id's %2F into a segment
    break; gunicorn and Werkzeug keep the request line in RAW_URI / REQUEST_URI.
    """

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith(PREFIX):
            environ["PATH_INFO"] = encoded_path(environ)
        return self.wsgi_app(environ, start_response)


def encoded_path(environ) -> str:
    """PATH_INFO with each segment still percent-encoded (and only ASCII)."""
    path_info = environ["PATH_INFO"]  # WSGI: the bytes, decoded as latin-1
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    raw = raw.partition("?")[0]
    if "://" in raw:
        raw = urlsplit(raw).path
    start = raw.find(PREFIX)
    while start != -1:  # after SCRIPT_NAME; it must decode to PATH_INFO exactly
        candidate = raw[start:]
        if unquote_to_bytes(candidate).decode("latin-1") == path_info:
            return quote(candidate.encode("latin-1"), safe=PATH_SAFE)
        start = raw.find(PREFIX, start + 1)
    # No raw path to go by: ids with '/' cannot be told apart, all others still work.
    return "/".join(quote(part.encode("latin-1"), safe="") for part in path_info.split("/"))


@bp.get("/streams")
@doc(
    "listStreams",
    ["streams"],
    query=schemas.StreamListQuerySchema,
    response=schemas.StreamPageSchema,
    errors=(400, 503),
)
@require("read")
def list_streams():
    """List streams, most recently updated first.

    Pass `next_cursor` as `cursor` until it is null. A stream updated while you page
    moves to the front, so a walk may miss it, but never lists one twice. A key
    limited to some agents sees only theirs (a page may then hold fewer than `limit`).
    """
    return read_stream_page(load_query(stream_query))


@bp.get("/streams/<id:agent_id>/<id:task_id>")
@doc("getStream", ["streams"], response=schemas.StreamSchema, errors=(404, 503))
@require("read")
def get_stream(agent_id: str, task_id: str):
    """Read one stream's checkpoint, counters and snapshot state.

    Ids are percent-encoded path segments: the agent `a/b` is `a%2Fb`.
    """
    g.principal.check_agent(agent_id)
    return stream_schema.dump(read_stream(agent_id, task_id))


@bp.get("/streams/<id:agent_id>/<id:task_id>/rows")
@doc(
    "listRows",
    ["streams"],
    query=schemas.RowListQuerySchema,
    response=schemas.RowPageSchema,
    errors=(400, 404, 503),
)
@require("read")
def list_rows(agent_id: str, task_id: str):
    """List a stream's rows, a page at a time, in Redis HSCAN order.

    Pass `next_cursor` as `cursor` until it is null. Every row present throughout
    the walk is listed at least once; rows written meanwhile may be listed or not.
    Each row is the stored JSON, verbatim.
    """
    g.principal.check_agent(agent_id)
    page, cursor = read_row_page(agent_id, task_id, load_query(row_query))
    # Rows go out as stored, so big integers and number forms survive unchanged.
    entries = b",".join(
        b'{"key":%s,"index":%s,"row":%s}' % (rows.encode(key), index.encode() or b"null", row)
        for key, index, row in ((k, i, r.encode()) for k, i, r in page)
    )
    body = b'{"rows":[%s],"next_cursor":%s}' % (entries, rows.encode(cursor))
    return current_app.response_class(body, mimetype="application/json")


@bp.get("/streams/<id:agent_id>/<id:task_id>/rows/<id:row_key>")
@doc("getRow", ["streams"], response=schemas.RowSchema, errors=(404, 503))
@require("read")
def get_row(agent_id: str, task_id: str, row_key: str):
    """Read one row as stored: the latest event for its row key.

    The row key is percent-encoded like the ids; a composite key is its compact
    JSON array, e.g. `%5B101%2C%22eu%22%5D` for `[101,"eu"]`.
    """
    g.principal.check_agent(agent_id)
    exists, row = get_store().get_row(agent_id, task_id, row_key)
    if not exists:
        raise _unknown(agent_id, task_id)
    if row is None:
        raise ApiError(404, f"No row {row_key!r} in this stream.")
    return current_app.response_class(row.encode(), mimetype="application/json")


@bp.get("/streams/<id:agent_id>/<id:task_id>/changes")
@doc(
    "listChanges",
    ["streams"],
    query=schemas.ChangeListQuerySchema,
    response=schemas.ChangePageSchema,
    errors=(400, 404, 410, 503),
)
@require("read")
def list_changes(agent_id: str, task_id: str):
    """Follow a stream's change feed: every row written, and every row a snapshot's
    prune deleted, in the order Redis applied them.

    Needs `CHANGE_FEED_MAXLEN` above 0 (otherwise the feed stays empty). Pass
    `next_cursor` as `after` to read on; an empty page means nothing new yet. When the
    feed was trimmed past `after`, the answer is 410 with `oldest_id`: re-read the rows,
    then follow the feed from the id taken with `after=$` before that read.
    """
    g.principal.check_agent(agent_id)
    query = load_query(change_query)
    page = get_store().list_changes(agent_id, task_id, query["limit"], query.get("after"))
    if page is None:
        raise _unknown(agent_id, task_id)
    if page.trimmed:
        raise ApiError(
            410,
            "The change feed no longer holds every entry after "
            f"{query['after']!r}: re-read the rows, then follow the feed.",
            extra={"oldest_id": page.oldest_id},
        )
    # Rows go out as stored, like listRows.
    entries = b",".join(
        b'{"id":"%s","op":"%s","key":%s,"index":%s%s}'
        % (
            entry.encode(),
            fields["op"].encode(),
            rows.encode(fields["key"]),
            fields["index"].encode() or b"null",
            b',"row":' + fields["row"].encode() if "row" in fields else b"",
        )
        for entry, fields in page.changes
    )
    body = b'{"changes":[%s],"next_cursor":"%s"}' % (entries, page.next_cursor.encode())
    return current_app.response_class(body, mimetype="application/json")


@bp.post("/streams/<id:agent_id>/<id:task_id>/snapshot")
@doc("requestSnapshot", ["streams"], response=schemas.StreamSchema, errors=(404, 503))
@require("admin")
def request_snapshot(agent_id: str, task_id: str):
    """Ask the agent for a full snapshot.

    The stream's next batch is answered `snapshot_needed: true`, once. Asked while
    the last snapshot's rows are being pruned, it follows the prune.
    """
    g.principal.check_agent(agent_id)
    now_ms = time.time_ns() // 1_000_000
    if get_store().set_snapshot_requested(agent_id, task_id, now_ms) is None:
        raise _unknown(agent_id, task_id)
    return stream_schema.dump(_known_stream(agent_id, task_id))


@bp.delete("/streams/<id:agent_id>/<id:task_id>")
@doc("deleteStream", ["streams"], response=schemas.DroppedStreamSchema, errors=(404, 503))
@require("admin")
def delete_stream(agent_id: str, task_id: str):
    """Drop a stream: its checkpoint and rows.

    The status endpoint then answers 404, so the agent starts over.
    """
    g.principal.check_agent(agent_id)
    dropped = get_store().delete_stream(agent_id, task_id)
    if dropped is None:
        raise _unknown(agent_id, task_id)
    return dropped_stream.dump({"agent_id": agent_id, "task_id": task_id, "rows_deleted": dropped})


def read_stream_page(query: dict) -> dict:
    """A page of the streams the principal may see, shaped as listStreams answers it."""
    after = _stream_cursor(query.get("cursor"))
    found, following = get_store().list_streams(query["limit"], after, g.principal.agents)
    cursor = None if following is None else _encode(f"{following[0]}:{following[1]}")
    return stream_page.dump({"streams": found, "next_cursor": cursor})


def read_stream(agent_id: str, task_id: str) -> dict:
    """The stream's stored state (404 if unknown); a pending prune takes a step."""
    stream = _known_stream(agent_id, task_id)
    if stream.get("snapshot_state") == "pruning":
        snapshots.continue_prune(get_store(), agent_id, task_id, budget_s=0)
    return stream


def read_row_page(
    agent_id: str, task_id: str, query: dict
) -> tuple[list[tuple[str, str, str]], str | None]:
    """([(row key, index or '', row JSON)], next_cursor) for listRows' query (404 if unknown)."""
    after = _row_cursor(query.get("cursor"))
    listed = get_store().list_rows(agent_id, task_id, query["limit"], after)
    if listed is None:
        raise _unknown(agent_id, task_id)
    page, following = listed
    return page, None if following is None else f"{following[0]}-{following[1]}"


def register(app: Flask) -> None:
    """Mount /streams, routing on encoded ids (see RawStreamPaths)."""
    app.url_map.converters["id"] = StreamIdConverter
    app.register_blueprint(bp)
    app.wsgi_app = RawStreamPaths(app.wsgi_app)


def _known_stream(agent_id: str, task_id: str) -> dict:
    stream = get_store().get_stream(agent_id, task_id)
    if stream is None:
        raise _unknown(agent_id, task_id)
    return stream


def _unknown(agent_id: str, task_id: str) -> ApiError:
    return ApiError(404, f"No stream with agent_id {agent_id!r} and task_id {task_id!r}.")


def _bad_cursor() -> ApiError:
    message = "Invalid query: cursor."
    return ApiError(400, message, errors={"cursor": ["Not a cursor this endpoint gave."]})


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _stream_cursor(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, _, tag = text.partition(":")
        if not tag.startswith("{"):
            raise ValueError(text)
        return int(score), tag
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad_cursor() from None


def _row_cursor(cursor: str | None) -> tuple[int, int]:
    if cursor is None:
        return 0, 0
    scan, _, skip = cursor.partition("-")
    if not (scan.isdigit() and skip.isdigit() and scan.isascii() and skip.isascii()):
        raise _bad_cursor()
    return int(scan), int(skip)
