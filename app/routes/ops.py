"""Public operational endpoints: liveness, readiness, metrics, the OpenAPI document."""

import hmac

from flask import Blueprint, current_app, request

from .. import metrics, schemas
from ..errors import ApiError
from ..spec import doc
from ..state import get_settings, get_state, get_store

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@doc("getHealth", ["ops"], response=schemas.HealthSchema)
def get_health():
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@bp.get("/readyz")
@doc("getReadiness", ["ops"], response=schemas.HealthSchema, errors=(503,))
def get_readiness():
    """Readiness: Redis answers PING."""
    get_store().ping()
    return {"status": "ok"}


@bp.get("/metrics")
@doc(
    "getMetrics",
    ["ops"],
    response={"type": "string"},
    media_type="text/plain; version=0.0.4",
    errors=(401,),
)
def get_metrics():
    """Prometheus metrics, summed over every gunicorn worker.

    Public unless the METRICS_TOKEN setting is set; then the request must carry
    `Authorization: Bearer <METRICS_TOKEN>` (that token only: API keys are not
    accepted here), and gets 401 without it.
    """
    token = get_settings().metrics_token
    if token:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            raise ApiError(
                401,
                "This endpoint needs the METRICS_TOKEN as a Bearer token.",
                headers={"WWW-Authenticate": 'Bearer realm="fusink metrics"'},
            )
    return current_app.response_class(metrics.render(), content_type=metrics.CONTENT_TYPE)


@bp.get("/openapi.json")
@doc("getOpenapi", ["ops"], response={"type": "object"})
def get_openapi():
    """This OpenAPI document, byte for byte the committed openapi.json."""
    return current_app.response_class(get_state().spec_bytes, mimetype="application/json")
