"""Public operational endpoints: liveness, readiness, the OpenAPI document."""

from flask import Blueprint, current_app

from .. import schemas
from ..spec import doc
from ..state import get_state, get_store

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


@bp.get("/openapi.json")
@doc("getOpenapi", ["ops"], response={"type": "object"})
def get_openapi():
    """This OpenAPI document, byte for byte the committed openapi.json."""
    return current_app.response_class(get_state().spec_bytes, mimetype="application/json")
