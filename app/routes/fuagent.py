"""The two endpoints fuagent calls: ingest a batch, read a checkpoint."""

from flask import Blueprint, Flask, g, request

from .. import ingest, metrics, schemas, snapshots
from ..auth import require
from ..errors import ApiError
from ..spec import doc
from ..state import get_settings, get_state, get_store
from . import load_query

ingest_result = schemas.IngestResultSchema()
status_query = schemas.SyncStatusQuerySchema()
sync_status = schemas.SyncStatusSchema()


@doc(
    "ingestBatch",
    ["fuagent"],
    body=schemas.BatchSchema,
    response=schemas.IngestResultSchema,
    errors=(400, 409, 413, 415, 422, 503),
)
@require("ingest")
def ingest_batch():
    """Ingest one batch of change events.

    Rows are upserted by row key in index order; the stream's checkpoint becomes
    the highest index stored. The whole batch is applied, or none of it. A stream
    keeps the row-key fields of its first batch: a batch keyed otherwise is 409.
    """
    state, context = get_state(), g._get_current_object()
    batch = state.batch_schema.load(request._get_current_object().get_json())
    context.principal.check_agent(batch["agent_id"])
    log_fields = context.log_fields = {
        "agent_id": batch["agent_id"],
        "task_id": batch["task_id"],
        "events": len(batch["events"]),
    }
    store = state.get_store()
    result = ingest.apply(batch, store, state.key_fields_for)
    if result.snapshot_state == "pruning":
        # The end of a snapshot prunes for a bounded time here; other batches take one
        # step, so a prune left by a dead process resumes.
        budget = snapshots.PRUNE_REQUEST_BUDGET_S if batch["is_snapshot_end"] else 0
        snapshots.continue_prune(store, batch["agent_id"], batch["task_id"], budget)
    metrics.batch_applied(len(batch["events"]), result)
    log_fields.update(
        rows_written=result.rows_written,
        rows_skipped=result.rows_skipped,
        snapshot_needed=result.snapshot_needed,
    )
    return ingest_result.dump(result)


@doc(
    "getSyncStatus",
    ["fuagent"],
    query=schemas.SyncStatusQuerySchema,
    response=schemas.SyncStatusSchema,
    errors=(400, 404, 503),
)
@require("ingest", "read")
def get_sync_status():
    """Read a stream's checkpoint.

    fuagent resumes after `index`; 404 means the stream has no checkpoint yet.
    """
    query = load_query(status_query)
    g._get_current_object().principal.check_agent(query["agent_id"])
    store = get_store()
    index, snapshot_state = store.get_checkpoint(query["agent_id"], query["task_id"])
    if snapshot_state == "pruning":
        # A prune left by a process that died resumes here, a step at a time.
        snapshots.continue_prune(store, query["agent_id"], query["task_id"], budget_s=0)
    if index is None:
        if get_settings().missing_checkpoint != "zero":
            raise ApiError(404, "No checkpoint for this stream: start from the beginning.")
        index = 0
    return sync_status.dump({"index": index})


def register(app: Flask) -> None:
    """Mount the endpoints where INGEST_PATH and STATUS_PATH put them."""
    settings = app.extensions["fusink"].settings
    bp = Blueprint("fuagent", __name__)
    bp.add_url_rule(settings.ingest_path, view_func=ingest_batch, methods=["POST"])
    bp.add_url_rule(settings.status_path, view_func=get_sync_status, methods=["GET"])
    app.register_blueprint(bp)
