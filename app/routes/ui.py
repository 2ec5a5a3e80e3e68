"""The operator's pages under /ui/: every stream at a glance, and one stream with its rows."""

from __future__ import annotations

import base64
import hashlib
import time

from flask import Blueprint, Flask, g, render_template, request
from markupsafe import Markup

from .. import keys, schemas
from ..auth import require
from ..spec import doc
from ..state import get_settings
from . import load_query
from .streams import read_row_page, read_stream, read_stream_page, stream_query, stream_schema

REFRESH_S = 5
# The pages' only script; the CSP admits it by its hash, so no other inline script runs.
REFRESH_SCRIPT = (
    f"setInterval(function () {{ if (!document.hidden) location.reload(); }}, {REFRESH_S * 1000});"
)
SCRIPT_HASH = base64.b64encode(hashlib.sha256(REFRESH_SCRIPT.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        f"script-src 'sha256-{SCRIPT_HASH}'",
        "style-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HTML = {"response": {"type": "string"}, "media_type": "text/html"}
# Fields get_stream() adds to the checkpoint hash; the page lists the hash without them.
ADDED_FIELDS = ("rows", "tag")

bp = Blueprint(
    "ui",
    __name__,
    url_prefix="/ui",
    template_folder="../templates",
    static_folder="../static",
)
view_query = schemas.StreamViewQuerySchema()


@bp.get("/")
@doc("getStreamsPage", ["ui"], query=schemas.StreamListQuerySchema, errors=(400, 503), **HTML)
@require("read")
def streams_page():
    """The operator's page: every stream, most recently updated first.

    HTML for a browser, which asks for Basic credentials (BASIC_AUTH_USERS) itself.
    It reloads every few seconds and highlights streams not updated for longer than
    UI_STALE_AFTER_S. Paged like listStreams; a key limited to some agents sees
    only theirs.
    """
    query = load_query(stream_query)
    page = read_stream_page(query)
    return _render(
        "ui/streams.html",
        page=page,
        limit=request.args.get("limit"),
        paged="cursor" in request.args,
    )


@bp.get("/stream")
@doc(
    "getStreamPage",
    ["ui"],
    query=schemas.StreamViewQuerySchema,
    errors=(400, 404, 503),
    **HTML,
)
@require("read")
def stream_page():
    """One stream's page: its state, its row-key fields if recorded, a page of its rows.

    HTML for a browser; the rows are paged like listRows.
    """
    query = load_query(view_query)
    agent_id, task_id = query["agent_id"], query["task_id"]
    g.principal.check_agent(agent_id)
    state = read_stream(agent_id, task_id)
    rows, next_cursor = read_row_page(agent_id, task_id, query)
    stream = stream_schema.dump(state)
    return _render(
        "ui/stream.html",
        stream=stream,
        stored={k: v for k, v in sorted(state.items()) if k not in ADDED_FIELDS},
        checkpoint_key=keys.checkpoint_key(get_settings().key_prefix, state["tag"]),
        rows=rows,
        next_cursor=next_cursor,
        limit=request.args.get("limit"),
        paged="cursor" in request.args,
    )


def register(app: Flask) -> None:
    """Mount /ui/ and its stylesheet."""
    app.register_blueprint(bp)


@bp.after_request
def security_headers(response):
    """Every /ui/ response, errors and the stylesheet too, carries the pages' CSP."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _render(template: str, **context) -> str:
    g.now_ms = time.time_ns() // 1_000_000  # one "now" for every age on the page
    return render_template(
        template,
        refresh_script=Markup(REFRESH_SCRIPT),  # a constant, admitted by its hash
        refresh_s=REFRESH_S,
        principal=g.principal.name,
        now_ms=g.now_ms,
        stale_after=duration(get_settings().ui_stale_after_s),
        **context,
    )


def duration(seconds: float) -> str:
    """A short human duration: `4 s`, `12 min`, `3 h`, `2 d`."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


# The filters show an unset value (None, or a field the stream lacks) as a dash.


@bp.app_template_filter("utc")
def utc(ms) -> str:
    """Milliseconds since the epoch as `2026-11-25 11:51:42 UTC`."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000)) if _is_int(ms) else "—"


@bp.app_template_filter("count")
def count(value) -> str:
    """A count with thousands separators: `1,234,567`."""
    return f"{value:,}" if _is_int(value) else "—"


@bp.app_template_filter("index")
def index(value) -> str:
    """An index or checkpoint as it is: `1678886400000`."""
    return str(value) if _is_int(value) else "—"


@bp.app_template_filter("age")
def age(ms) -> str:
    """How long ago a time in ms since the epoch was: `4 s ago`."""
    return f"{duration(max(0, g.now_ms - ms) / 1000)} ago" if _is_int(ms) else "—"


@bp.app_template_test("stale")
def stale(stream: dict) -> bool:
    """The stream's last update is older than UI_STALE_AFTER_S."""
    updated_at = stream.get("updated_at")
    limit_ms = get_settings().ui_stale_after_s * 1000
    return _is_int(updated_at) and g.now_ms - updated_at > limit_ms


def _is_int(value) -> bool:
    return type(value) is int
