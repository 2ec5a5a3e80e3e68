"""Store: the only code that talks to Redis; it loads and runs the scripts in lua/."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from importlib import resources

import redis
from redis.exceptions import ClusterDownError, OutOfMemoryError, ReadOnlyError, TryAgainError

from . import keys
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
SCRIPTS = ("ingest_batch",)
STREAM_INDEX_REFRESH_MS = 1000
MAX_REMEMBERED_STREAMS = 10_000


@dataclass(frozen=True)
class BatchResult:
    """What one applied batch did."""

    checkpoint: int | None
    snapshot_needed: bool
    rows_written: int
    rows_skipped: int


class Store:
    """fusink's data in Redis, in the layout the README documents."""

    def __init__(self, client, settings: Settings):
        self.client = client
        self.prefix = settings.key_prefix
        self.snapshot_on_suggest = "1" if settings.snapshot_on_suggest else "0"
        self._listed_at: dict[str, int] = {}  # stream tag -> when this process listed it
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
            StoreUnavailable: Redis cannot take the batch now; nothing was written.
        """
        tag = keys.stream_tag(agent_id, task_id)
        stream_keys = [
            keys.checkpoint_key(self.prefix, tag),
            keys.rows_key(self.prefix, tag),
            keys.row_meta_key(self.prefix, tag),
        ]
        args = [
            now_ms,
            max_index,
            len(triples) // 3,
            "1" if suggested else "0",
            self.snapshot_on_suggest,
            "1" if snapshot_end else "0",
            agent_id,
            task_id,
            *triples,
        ]
        with unavailable_as_503():
            checkpoint, needed, written, skipped = self.ingest_batch(keys=stream_keys, args=args)
        return BatchResult(
            checkpoint=int(checkpoint) if checkpoint else None,
            snapshot_needed=needed == 1,
            rows_written=written,
            rows_skipped=skipped,
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

    def get_checkpoint(self, agent_id: str, task_id: str) -> int | None:
        """The stream's checkpoint, or None when it has none.

        Raises:
            StoreUnavailable: Redis did not answer.
        """
        tag = keys.stream_tag(agent_id, task_id)
        with unavailable_as_503():
            index = self.client.hget(keys.checkpoint_key(self.prefix, tag), "index")
        return None if index is None else int(index)

    def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers PING."""
        with unavailable_as_503():
            self.client.ping()


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
