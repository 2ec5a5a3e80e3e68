"""The ingest use case: a validated batch -> one Store call -> the agent's answer."""

import time

from . import rows
from .config import Settings
from .store import BatchResult, Store


def apply(batch: dict, store: Store, settings: Settings) -> BatchResult:
    """Store a batch validated by BatchSchema; return what the agent is told."""
    key_fields = settings.row_key_fields
    triples = []
    max_index = -1
    for event in batch["events"]:
        index = event.get("index")
        if index is None:
            index_text = ""
        else:
            index_text = str(index)
            max_index = max(max_index, index)
        triples += (rows.row_key(event, key_fields), index_text, rows.encode(event))
    agent_id, task_id = batch["agent_id"], batch["task_id"]
    now_ms = time.time_ns() // 1_000_000
    store.list_stream(agent_id, task_id, now_ms)
    return store.apply_batch(
        agent_id,
        task_id,
        triples,
        str(max_index) if max_index >= 0 else "",
        suggested=batch["snapshot_sync_suggested"],
        snapshot_end=batch["is_snapshot_end"],
        now_ms=now_ms,
    )
