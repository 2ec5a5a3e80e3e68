"""Store calls that steer a stream: prune steps, snapshot requests, reset, drop."""

from __future__ import annotations

from .. import keys, metrics
from .base import StoreBase, unavailable_as_503


class StreamAdmin(StoreBase):
    """Changing a stream's state outside of batches."""

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
                keys=stream_keys,
                args=[count, now_ms, token, lease_ms, self.change_feed_maxlen],
            )
        return status, deleted

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
