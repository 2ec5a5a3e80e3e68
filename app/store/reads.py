"""Store reads for /streams and the CLI: streams, a page of rows, one row."""

from __future__ import annotations

from dataclasses import dataclass

from .. import keys, rows
from .base import StoreBase, unavailable_as_503

MAX_STREAMS_EXAMINED = 10_000  # per page of list_streams, for keys limited to agents
MAX_ROW_SCANS = 16  # HSCAN calls per page of list_rows (sparse hashes answer few rows)
FEED_START = "0-0"  # the cursor of a reader that has seen no entry yet
FEED_END = "$"  # as a cursor: no entries, only the feed's last id


@dataclass(frozen=True)
class ChangePage:
    """A page of a stream's change feed."""

    changes: list[tuple[str, dict[str, str]]]  # (entry id, its fields)
    next_cursor: str  # the `after` of the next page
    trimmed: bool  # entries after the cursor are gone: the reader must re-read the rows
    oldest_id: str | None  # the oldest entry kept (None: the feed is empty)


class StreamReads(StoreBase):
    """Reading streams and rows."""

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
        for tag, fields, row_count in zip(tags, replies[::2], replies[1::2], strict=True):
            streams.append({**fields, "rows": row_count, "tag": tag} if fields else None)
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
            (key, rows.stored_index(row, meta), row)
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

    def list_changes(self, agent_id: str, task_id: str, limit: int, after: str | None):
        """A page of the stream's change feed after the entry id `after`, or None if
        the stream is unknown.

        Args:
            after: an entry id, FEED_START, FEED_END (no entries: only learn the
                last id) or None (from the oldest entry kept).
        Returns:
            ChangePage. Its `trimmed` is true when entries after `after` may have
            been removed: `after` is older than the oldest entry kept and entries
            were trimmed (or lost), or it is not an id of this feed (one from before
            the stream was dropped). A cursor on the very last entry trimmed counts
            as trimmed too: nothing tells it from an older one.
        Raises:
            StoreUnavailable: Redis did not answer.
        """
        tag = keys.stream_tag(agent_id, task_id)
        feed_keys = [keys.checkpoint_key(self.prefix, tag), keys.changes_key(self.prefix, tag)]
        start = "-" if after is None else "" if after == FEED_END else "(" + after
        with unavailable_as_503():
            known, added, kept, first, last, page = self.read_changes(
                keys=feed_keys, args=[start, limit]
            )
        if not known:
            return None
        changes = [
            (entry, dict(zip(fields[::2], fields[1::2], strict=True))) for entry, fields in page
        ]
        trimmed = False
        if after not in (None, FEED_END):
            older = not first or _entry_id(after) < _entry_id(first)
            trimmed = older and (after != FEED_START or added > kept)
        if changes:
            following = changes[-1][0]
        elif after not in (None, FEED_END):
            following = after
        else:
            following = last or FEED_START
        return ChangePage(changes, following, trimmed, first or None)


def _entry_id(text: str) -> tuple[int, int]:
    """A Redis Stream entry id `ms-seq` as numbers, for comparing."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)
