"""Redis key names: enc(), the stream tag, and every key fusink writes."""

from functools import lru_cache
from urllib.parse import quote, unquote


def enc(value: str) -> str:
    """Percent-encode every byte outside A-Z a-z 0-9 . _ ~ - (uppercase hex)."""
    return quote(value, safe="")


@lru_cache(maxsize=4096)  # asked for on every request; quote() is slow
def stream_tag(agent_id: str, task_id: str) -> str:
    """`{enc(agent):enc(task)}`: a Redis Cluster hash tag, unique per stream."""
    return "{" + enc(agent_id) + ":" + enc(task_id) + "}"


def parse_stream_tag(tag: str) -> tuple[str, str]:
    """The (agent_id, task_id) a stream tag was made from."""
    agent, _, task = tag.strip("{}").partition(":")
    return unquote(agent), unquote(task)


def checkpoint_key(prefix: str, tag: str) -> str:
    """Hash: index, updated_at, counters and snapshot state of one stream."""
    return f"{prefix}:{tag}:checkpoint"


def rows_key(prefix: str, tag: str) -> str:
    """Hash: row key -> the row's latest event as compact JSON."""
    return f"{prefix}:{tag}:rows"


def row_meta_key(prefix: str, tag: str) -> str:
    """Hash: row key -> "index:generation" of the stored row."""
    return f"{prefix}:{tag}:rowmeta"


def prune_lock_key(prefix: str, tag: str) -> str:
    """String: the token of the process stepping the stream's prune (a lease, PX)."""
    return f"{prefix}:{tag}:prune-lock"


def changes_key(prefix: str, tag: str) -> str:
    """Stream: the change feed, one entry per row written or pruned (CHANGE_FEED_MAXLEN)."""
    return f"{prefix}:{tag}:changes"


def stream_keys(prefix: str, tag: str) -> list[str]:
    """Every key of one stream, in the order the scripts take them as KEYS."""
    return [
        checkpoint_key(prefix, tag),
        rows_key(prefix, tag),
        row_meta_key(prefix, tag),
        prune_lock_key(prefix, tag),
        changes_key(prefix, tag),
    ]


def streams_key(prefix: str) -> str:
    """Sorted set: every stream's tag, scored by its last update (ms)."""
    return f"{prefix}:streams"
