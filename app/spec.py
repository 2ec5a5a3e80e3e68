"""The OpenAPI document: doc() beside each view, build() from the app, the file."""

from __future__ import annotations

import inspect
import json
import os
import re
import tempfile
from pathlib import Path

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

from . import schemas

VERSION = "1.0.0"
RULE_ARGUMENT = re.compile(r"<(?:[^:>]+:)?([^>]+)>")  # a Flask <converter:name> in a route
SECURITY_SCHEMES = {
    "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "BearerAuth": {"type": "http", "scheme": "bearer"},
    "BasicAuth": {"type": "http", "scheme": "basic"},
}
ERROR_DESCRIPTIONS = {
    400: "Malformed request.",
    401: "Missing or invalid credentials.",
    403: "The credentials lack the scope, or may not access this agent.",
    404: "Not found.",
    409: "The stream's recorded row-key fields (`row_key_fields`) differ from those "
    "ROW_KEY_RULES or ROW_KEY_FIELDS give it now; nothing was written. Drop the stream "
    "to re-key it.",
    410: "The change feed no longer holds every entry after `after`: re-read the rows.",
    413: "Request body over MAX_CONTENT_LENGTH.",
    415: "Request body is not JSON.",
    422: "Invalid batch; `errors` names each bad field by path.",
    503: "Redis is unavailable; retry after `Retry-After` seconds.",
}
ROW_KEY_FIELD = {
    "oneOf": [{"type": "string", "minLength": 1}, {"type": "integer"}],
    "description": "A row-key field (ROW_KEY_FIELDS, or the stream's ROW_KEY_RULES entry): "
    "a non-empty string or an integer.",
}
SCHEMAS = (
    schemas.BatchEventSchema,
    schemas.BatchSchema,
    schemas.IngestResultSchema,
    schemas.SyncStatusSchema,
    schemas.ApiErrorSchema,
    schemas.HealthSchema,
    schemas.StreamSnapshotSchema,
    schemas.StreamSchema,
    schemas.StreamPageSchema,
    schemas.RowSchema,
    schemas.RowEntrySchema,
    schemas.RowPageSchema,
    schemas.DroppedStreamSchema,
    schemas.ChangeSchema,
    schemas.ChangePageSchema,
)


def doc(operation_id, tags, *, body=None, query=None, response=None, errors=(), **extra):
    """Attach a view's OpenAPI operation; its docstring gives the summary."""

    def decorate(view):
        view.openapi = {
            "operation_id": operation_id,
            "tags": tags,
            "body": body,
            "query": query,
            "response": response,
            "errors": errors,
            **extra,
        }
        return view

    return decorate


def build(app: Flask) -> dict:
    """The OpenAPI document of every documented route in `app.url_map`."""
    settings = app.extensions["fusink"].settings
    server_url = (
        settings.public_url if settings.public_url.endswith("/") else settings.public_url + "/"
    )
    spec = APISpec(
        title="fusink",
        version=VERSION,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin(schema_name_resolver=_schema_name)],
        info={"description": "Receives fuagent change batches and stores the rows in Redis."},
        # fuagent joins the extension to servers[0].url with urljoin: a relative
        # path keeps a PUBLIC_URL prefix such as https://host/v1/.
        servers=[
            {"url": server_url, "x-fuagent-status-endpoint": settings.status_path.lstrip("/")}
        ],
    )
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    for schema in SCHEMAS:
        spec.components.schema(_schema_name(schema), schema=schema)
    # The row-key fields and MAX_BATCH_EVENTS are settings: the batch schema learns them
    # here. With ROW_KEY_RULES an event requires the fields every stream's key has.
    event = spec.components.schemas[_schema_name(schemas.BatchEventSchema)]
    key_shapes = [settings.row_key_fields, *(rule.fields for rule in settings.row_key_rules)]
    required = [name for name in key_shapes[0] if all(name in shape for shape in key_shapes)]
    if required:
        event["required"] = required
    for shape in key_shapes:
        event["properties"].update(dict.fromkeys(shape, ROW_KEY_FIELD))
    events = spec.components.schemas[_schema_name(schemas.BatchSchema)]["properties"]["events"]
    events["items"] = {"$ref": f"#/components/schemas/{_schema_name(schemas.BatchEventSchema)}"}
    events["maxItems"] = settings.max_batch_events
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        if not hasattr(view, "openapi"):
            continue
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        operations = {m.lower(): _operation(view, rule) for m in methods}
        spec.path(path=RULE_ARGUMENT.sub(r"{\1}", rule.rule), operations=operations)
    return spec.to_dict()


def render(app: Flask) -> bytes:
    """The document as the bytes written to openapi.json and served."""
    return (json.dumps(build(app), indent=2) + "\n").encode()


def write(path: str | os.PathLike, content: bytes) -> bool:
    """Atomically replace `path` with `content` unless it is already that; True if written."""
    target = Path(path)
    if target.exists() and target.read_bytes() == content:
        return False
    fd, temp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        os.unlink(temp)
        raise
    return True


def _schema_name(schema) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    return cls.__name__.removesuffix("Schema")


def _operation(view, rule) -> dict:
    meta = view.openapi
    summary, _, description = inspect.cleandoc(view.__doc__ or "").partition("\n")
    operation = {
        "operationId": meta["operation_id"],
        "tags": meta["tags"],
        "summary": summary.strip(),
    }
    if description.strip():
        operation["description"] = description.strip()
    scopes = getattr(view, "required_scopes", None)
    if scopes:
        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
        operation["description"] = (
            operation.get("description", "") + f"\n\nRequires scope: {' or '.join(scopes)}."
        ).strip()
    else:
        operation["security"] = []
    parameters = [
        {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}
        # rule.arguments is a set: take the names in path order, so the file is stable.
        for name in RULE_ARGUMENT.findall(rule.rule)
    ]
    if meta["query"]:
        parameters.append({"in": "query", "schema": meta["query"]})
    if parameters:
        operation["parameters"] = parameters
    if meta["body"]:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": meta["body"]}},
        }
    responses = {}
    if meta["response"] is not None:
        responses["200"] = {
            "description": "OK",
            "content": {meta.get("media_type", "application/json"): {"schema": meta["response"]}},
        }
    else:
        responses["200"] = {"description": "OK"}
    error_codes = set(meta["errors"]) | ({401, 403} if scopes else set()) | {500}
    for code in sorted(error_codes):
        responses[str(code)] = {
            "description": ERROR_DESCRIPTIONS.get(code, "Internal error."),
            "content": {"application/json": {"schema": "ApiError"}},
        }
    operation["responses"] = responses
    return operation
