"""Store: the only code that talks to Redis; it loads and runs the scripts in lua/."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass
from importlib import resources

import redis
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)

from . import keys, metrics
from .config import Settings
from .errors import StoreUnavailable

# Replies that mean "not now" rather than "wrong", also when a script relays them.
TRANSIENT_REPLY = re.compile(r"(^|-)(OOM|MASTERDOWN|LOADING|BUSY|NOREPLICAS|READONLY)\b")
TRANSIENT_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
    OutOfMemoryError,
)
SCRIPTS = ("ingest_batch", "prune_step", "drop_stream", "request_snapshot", "reset_checkpoint")
STREAM_INDEX_REFRESH_MS = 1000
MAX_REMEMBERED_STREAMS = 10_000
MAX_STREAMS_EXAMINED = 10_000  # per page of list_streams, for keys limited to agents
MAX_ROW_SCANS = 16  # HSCAN calls per page of list_rows (sparse hashes answer few rows)
MEMORY_CHECK_INTERVAL_S = 1.0

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


class Store:
    """fusink's data in Redis, in the layout the README documents."""

    def __init__(self, client, settings: Settings):
        self.client = client
        self.prefix = settings.key_prefix
        self.snapshot_on_suggest = "1" if settings.snapshot_on_suggest else "0"
        self.snapshot_end = "2" if settings.snapshot_prune else "1"
        self._listed_at: dict[str, int] = {}  # stream tag -> when this process listed it
        self.wait_replicas = settings.wait_replicas
        self.wait_timeout_ms = settings.wait_timeout_ms
        self.memory_high_watermark = settings.memory_high_watermark
        self._memory_checked: dict[str, tuple[float, bool]] = {}  # node -> (when, above)
        lua = resources.files(__package__) / "lua"
        for name in SCRIPTS:
            script = (lua / f"{name}.lua").read_text(encoding="utf-8")
            setattr(self, name, client.register_script(script))

    def apply_batch(
        self,
        agent_id: str,
        task_id: str,
        triples: list,
        max_index: str,
        *,
        suggested: bool,
        snapshot_end: bool,
        now_ms: int,
    ) -> BatchResult:
        """Apply one batch in one script call.

        Args:
            triples: flat list of row key, index ('' if none), compact JSON.
            max_index: the batch's highest index as a decimal string, '' if none.
        Returns:
            BatchResult with the checkpoint after the batch.
        Raises:
            StoreUnavailable: Redis cannot take the batch now, is above
                MEMORY_HIGH_WATERMARK, or fewer than WAIT_REPLICAS replicas
                acknowledged the batch in time (it may be applied; a replay is a no-op).
        """
        tag = keys.stream_tag(agent_id, task_id)
        stream_keys = keys.stream_keys(self.prefix, tag)
        args = [
            now_ms,
            max_index,
            len(triples) // 3,
            "1" if suggested else "0",
            self.snapshot_on_suggest,
            self.snapshot_end if snapshot_end else "0",
            agent_id,
            task_id,
            *triples,
        ]
        with unavailable_as_503(), metrics.time_script("ingest_batch"):
            self._check_memory(stream_keys[0])
            checkpoint, needed, written, skipped, state, ended = self._run_ingest(stream_keys, args)
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
            return self.ingest_batch(keys=stream_keys, args=args)
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

    def _node(self, key: str) -> tuple[str, redis.Redis]:
        """(name, client) of the server holding `key`: the one server, or a cluster master."""
        if not isinstance(self.client, RedisCluster):
            return "", self.client
        node = self.client.get_node_from_key(key)
        return node.name, self.client.get_redis_connection(node)

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
            self.client.zadd(keys.streams_key(self.prefix), {tag: now_ms})
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
            index, state = self.client.hmget(
                keys.checkpoint_key(self.prefix, tag), "index", "snapshot_state"
            )
        return (None if index is None else int(index)), state or "none"

    def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers PING."""
        with unavailable_as_503():
            self.client.ping()

    def step_prune(
        self, agent_id: str, task_id: str, *, token: str, now_ms: int, count: int, lease_ms: int
    ) -> tuple[str, int]:
        """Run one bounded prune step (prune_step.lua) of the stream's pending prune.

        Args:
            token: identifies the runner; it holds the stream's prune lease for lease_ms.
            count: the HSCAN COUNT of the step.
        Returns:
            (status, rows deleted): status 'more', 'done' (completed, or nothing
            pending) or 'busy' (another runner holds the lease).
        Raises:
            StoreUnavailable: Redis did not answer; the prune resumes later.
        """
        tag = keys.stream_tag(agent_id, task_id)
        stream_keys = keys.stream_keys(self.prefix, tag)
        with unavailable_as_503(), metrics.time_script("prune_step"):
            status, deleted = self.prune_step(
                keys=stream_keys, args=[count, now_ms, token, lease_ms]
            )
        return status, deleted

    def get_stream(self, agent_id: str, task_id: str) -> dict | None:
        """The stream's checkpoint hash plus `rows` (its row count) and `tag`; None if unknown.

        Raises:
            StoreUnavailable: Redis did not answer.
        """
        return self._read_streams([keys.stream_tag(agent_id, task_id)])[0]

    def list_streams(
        self, limit: int, after: tuple[int, str] | None = None, agents=None
    ) -> tuple[list[dict], tuple[int, str] | None]:
        """A page of streams, most recently updated first.

        Args:
            after: (score, tag) of the last stream of the previous page.
            agents: agent ids to list (None: all); others are passed over.
        Returns:
            (streams as get_stream() gives them; the `after` of the next page or
            None). A stream updated while pages are read moves to the
            front, so a walk may miss it; none is listed twice.
        Raises:
            StoreUnavailable: Redis did not answer.
        """
        index = keys.streams_key(self.prefix)
        found, last, offset, capped = [], after, 0, False
        with unavailable_as_503():
            while len(found) <= limit:
                top = "+inf" if after is None else after[0]
                chunk = self.client.zrevrangebyscore(
                    index, top, "-inf", start=offset, num=limit + 1, withscores=True
                )
                offset += len(chunk)
                for tag, score in chunk:
                    position = (int(score), tag)
                    # Ties come in reverse byte order: those from the tag on were listed.
                    if after is not None and position[0] == after[0] and tag >= after[1]:
                        continue
                    last = position
                    if agents is None or keys.parse_stream_tag(tag)[0] in agents:
                        found.append(position)
                        if len(found) > limit:
                            break
                if len(chunk) <= limit:
                    break
                if offset >= MAX_STREAMS_EXAMINED:
                    capped = True
                    break
        page = found[:limit]
        streams = self._read_streams([tag for _, tag in page])
        listed = []
        for stream in streams:
            if stream is not None:  # dropped since it was listed
                listed.append(stream)
        if len(found) > limit:
            return listed, page[-1]
        return listed, (last if capped else None)

    def _read_streams(self, tags: list[str]) -> list[dict | None]:
        if not tags:
            return []
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            pipe.hgetall(keys.checkpoint_key(self.prefix, tag))
            pipe.hlen(keys.rows_key(self.prefix, tag))
        with unavailable_as_503():
            replies = pipe.execute()
        streams = []
        for tag, fields, rows in zip(tags, replies[::2], replies[1::2], strict=True):
            streams.append({**fields, "rows": rows, "tag": tag} if fields else None)
        return streams

    def list_rows(
        self, agent_id: str, task_id: str, limit: int, after: tuple[int, int] = (0, 0)
    ) -> tuple[list[tuple[str, str, str]], tuple[int, int] | None] | None:
        """A page of the stream's rows in HSCAN order, or None if the stream is unknown.

        Args:
            after: (HSCAN cursor, rows of that cursor's reply already listed).
        Returns:
            ([(row key, index or '', row JSON)], the `after` of the next page or None).
            Like HSCAN, a walk lists every row present throughout it; rows written
            or deleted meanwhile may be listed or not.
        Raises:
            StoreUnavailable: Redis did not answer.
        """
        tag = keys.stream_tag(agent_id, task_id)
        rows_key = keys.rows_key(self.prefix, tag)
        cursor, skip = after
        page: list[tuple[str, str]] = []
        with unavailable_as_503():
            if not self.client.exists(keys.checkpoint_key(self.prefix, tag)):
                return None
            for _ in range(MAX_ROW_SCANS):
                following, found = self.client.hscan(rows_key, cursor, count=limit)
                entries = list(found.items())[skip:]
                room = limit - len(page)
                if len(entries) > room:
                    page += entries[:room]
                    next_page = (cursor, skip + room)
                    break
                page += entries
                cursor, skip = following, 0
                next_page = None if cursor == 0 else (cursor, 0)
                if next_page is None or len(page) == limit:
                    break
            meta_key = keys.row_meta_key(self.prefix, tag)
            metas = self.client.hmget(meta_key, [k for k, _ in page]) if page else []
        listed = [
            (key, (meta or "").partition(":")[0], row)
            for (key, row), meta in zip(page, metas, strict=True)
        ]
        return listed, next_page

    def get_row(self, agent_id: str, task_id: str, row_key: str) -> tuple[bool, str | None]:
        """(whether the stream exists, the row's stored JSON or None).

        Raises:
            StoreUnavailable: Redis did not answer.
        """
        tag = keys.stream_tag(agent_id, task_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(keys.checkpoint_key(self.prefix, tag))
        pipe.hget(keys.rows_key(self.prefix, tag), row_key)
        with unavailable_as_503():
            exists, row = pipe.execute()
        return bool(exists), row

    def set_snapshot_requested(self, agent_id: str, task_id: str, now_ms: int) -> str | None:
        """Ask for a snapshot on the stream's next batch (request_snapshot.lua).

        Returns:
            The snapshot state now ('requested', or 'pruning' when the request waits
            for the running prune), or None if the stream is unknown.
        Raises:
            StoreUnavailable: Redis did not answer.
        """
        tag = keys.stream_tag(agent_id, task_id)
        with unavailable_as_503():
            state = self.request_snapshot(
                keys=[keys.checkpoint_key(self.prefix, tag)], args=[now_ms]
            )
        return state or None

    def set_checkpoint(self, agent_id: str, task_id: str, index: int | None) -> bool:
        """Set the stream's checkpoint to `index`, or remove it (None); rows stay.

        Returns:
            False if the stream is unknown.
        Raises:
            StoreUnavailable: Redis did not answer.
        """
        tag = keys.stream_tag(agent_id, task_id)
        with unavailable_as_503():
            done = self.reset_checkpoint(
                keys=[keys.checkpoint_key(self.prefix, tag)],
                args=["" if index is None else str(index)],
            )
        return done == 1

    def delete_stream(self, agent_id: str, task_id: str) -> int | None:
        """Drop the stream's keys (drop_stream.lua), then its P:streams entry.

        Returns:
            The number of rows it held, or None if the stream was unknown.
        Raises:
            StoreUnavailable: Redis did not answer; call again to finish.
        """
        tag = keys.stream_tag(agent_id, task_id)
        stream_keys = keys.stream_keys(self.prefix, tag)
        with unavailable_as_503():
            existed, rows = self.drop_stream(keys=stream_keys)
            removed = self.client.zrem(keys.streams_key(self.prefix), tag)
        self._listed_at.pop(tag, None)
        return rows if existed or removed else None


@contextlib.contextmanager
def unavailable_as_503():
    """Turn Redis being down, slow, full or read-only into StoreUnavailable."""
    try:
        yield
    except TRANSIENT_ERRORS as exc:
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
    except redis.ResponseError as exc:
        if TRANSIENT_REPLY.search(str(exc)):
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        raise
