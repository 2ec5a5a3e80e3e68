"""Store calls on fuagent's path: apply a batch, list its stream, read a checkpoint."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import orjson
import redis
from redis.exceptions import AskError, MovedError

from .. import keys, metrics, rows
from ..errors import StoreUnavailable
from .base import StoreBase, unavailable_as_503

STREAM_INDEX_REFRESH_MS = 1000
MAX_REMEMBERED_STREAMS = 10_000
MEMORY_CHECK_INTERVAL_S = 1.0
ROW_KEY_CONFLICT = "row_key_conflict"  # ingest_batch.lua's reply to a batch keyed otherwise

log = logging.getLogger("fusink.store")


@dataclass(frozen=True)
class BatchResult:
    """What one applied batch did."""

    checkpoint: int | None
    snapshot_needed: bool
    rows_written: int
    rows_skipped: int
    snapshot_state: str = "none"  # 'pruning': the stream's prune has steps left
    snapshot_ended: bool = False  # its end marker ended a running snapshot (not a replay)


class RowKeyConflict(Exception):
    """The stream recorded other row-key fields than the batch's; nothing was written."""

    def __init__(self, recorded: tuple[str, ...]):
        super().__init__(f"the stream is keyed by {', '.join(recorded)}")
        self.recorded = recorded


class IngestStore(StoreBase):
    """Applying batches and answering the status call."""

    def apply_batch(
        self,
        agent_id: str,
        task_id: str,
        columns: rows.Columns,
        max_index: str,
        *,
        in_order_from: str = "",
        suggested: bool,
        snapshot_end: bool,
        now_ms: int,
        key_fields: tuple[str, ...] = ("id",),
    ) -> BatchResult:
        """Apply one batch in one script call.

        Args:
            columns: the events' row keys, indexes ('' if none) and compact JSON.
            max_index: the batch's highest index as a decimal string, '' if none.
            in_order_from: the first index as a decimal string when every event has
                one and none is below the one before it, else ''. Such a batch that
                starts above every stored row is written without reading their indexes.
            key_fields: the row-key fields of the columns' keys; a stream records
                them with its first batch (`row_key_fields`).
        Returns:
            BatchResult with the checkpoint after the batch.
        Raises:
            RowKeyConflict: the stream recorded other row-key fields.
            StoreUnavailable: Redis cannot take the batch now, is above
                MEMORY_HIGH_WATERMARK, or fewer than WAIT_REPLICAS replicas
                acknowledged the batch in time (it may be applied; a replay is a no-op).
        """
        tag = keys.stream_tag(agent_id, task_id)
        stream_keys = keys.stream_keys(self.prefix, tag)
        args = [
            now_ms,
            max_index,
            len(columns.keys),
            "1" if suggested else "0",
            self.snapshot_on_suggest,
            self.snapshot_end if snapshot_end else "0",
            agent_id,
            task_id,
            in_order_from,
            columns.packed(),
            self.change_feed_maxlen,
            orjson.dumps(key_fields).decode(),
            self.row_meta_every_row,
        ]
        with unavailable_as_503(), metrics.time_script("ingest_batch"):
            self._check_memory(stream_keys[0])
            reply = self._run_ingest(stream_keys, args)
        if reply[0] == ROW_KEY_CONFLICT:
            raise RowKeyConflict(tuple(orjson.loads(reply[1])))
        checkpoint, needed, written, skipped, state, ended = reply
        return BatchResult(
            checkpoint=int(checkpoint) if checkpoint else None,
            snapshot_needed=needed == 1,
            rows_written=written,
            rows_skipped=skipped,
            snapshot_state=state,
            snapshot_ended=ended == 1,
        )

    def _run_ingest(self, stream_keys: list[str], args: list) -> list:
        """Run ingest_batch; with WAIT_REPLICAS, then WAIT on the same connection.

        WAIT counts the replicas that acknowledged the writes of the connection it
        is sent on, so the script and WAIT go through one pipeline to the node that
        owns the stream's slot.
        """
        if not self.wait_replicas:
            return self._run_script(self.ingest_batch, stream_keys, args)
        pipe = self._node(stream_keys[0])[1].pipeline(transaction=False)
        self.ingest_batch(keys=stream_keys, args=args, client=pipe)
        pipe.wait(self.wait_replicas, self.wait_timeout_ms)
        try:
            reply, acknowledged = pipe.execute()
        except (MovedError, AskError) as exc:
            # The slot moved: let the cluster client refresh its map; the agent retries.
            if isinstance(exc, MovedError):
                self.client.nodes_manager.update_moved_exception(exc)
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if acknowledged < self.wait_replicas:
            raise StoreUnavailable(
                f"{acknowledged} of {self.wait_replicas} replicas acknowledged the batch "
                f"within {self.wait_timeout_ms} ms"
            )
        return reply

    def _check_memory(self, key: str) -> None:
        """Refuse writes while the server holding `key` is above MEMORY_HIGH_WATERMARK.

        INFO is asked at most once per MEMORY_CHECK_INTERVAL_S per server and
        process. Only a maxmemory without an allkeys-* eviction policy counts: that
        is when Redis would fail writes with OOM rather than make room.
        """
        if not self.memory_high_watermark:
            return
        name, node = self._node(key)
        now = time.monotonic()
        checked_at, above = self._memory_checked.get(name, (float("-inf"), False))
        if now - checked_at >= MEMORY_CHECK_INTERVAL_S:
            # Claim the refresh first, so that the other threads keep the last answer.
            self._memory_checked[name] = (now, above)
            try:
                info = node.info("memory")
            except redis.ResponseError as exc:
                # INFO is disabled on some managed servers: run without the check.
                log.warning("memory watermark check off, INFO failed: %s", exc)
                self.memory_high_watermark = 0
                return
            maxmemory = int(info.get("maxmemory", 0))
            evicts = str(info.get("maxmemory_policy", "")).startswith("allkeys-")
            used = int(info["used_memory"])
            above = bool(maxmemory) and not evicts and used > self.memory_high_watermark * maxmemory
            self._memory_checked[name] = (now, above)
        if above:
            raise StoreUnavailable(
                f"Redis {name or 'server'} used memory is above MEMORY_HIGH_WATERMARK "
                f"({self.memory_high_watermark:g} of maxmemory)"
            )

    def list_stream(self, agent_id: str, task_id: str, now_ms: int) -> None:
        """Record the stream in the global index, scored by its last update.

        Called before a batch is applied, so a stream never lacks its entry; each
        process refreshes a stream at most once a second, so a busy stream costs
        one extra command a second rather than one per batch.

        Raises:
            StoreUnavailable: Redis did not answer.
        """
        tag = keys.stream_tag(agent_id, task_id)
        if now_ms - self._listed_at.get(tag, 0) < STREAM_INDEX_REFRESH_MS:
            return
        with unavailable_as_503():
            self._execute("ZADD", keys.streams_key(self.prefix), now_ms, tag)
        if len(self._listed_at) >= MAX_REMEMBERED_STREAMS:
            self._listed_at.clear()
        self._listed_at[tag] = now_ms

    def get_checkpoint(self, agent_id: str, task_id: str) -> tuple[int | None, str]:
        """The stream's checkpoint (None when it has none) and its snapshot state.

        Raises:
            StoreUnavailable: Redis did not answer.
        """
        tag = keys.stream_tag(agent_id, task_id)
        with unavailable_as_503():
            index, state = self._execute(
                "HMGET", keys.checkpoint_key(self.prefix, tag), "index", "snapshot_state"
            )
        return (None if index is None else int(index)), state or "none"
