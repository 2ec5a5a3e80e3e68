"""Synthetic fuagent batches for the benchmark, and the Redis state they must leave."""

import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import redis

PREFIX = "fusink"
STREAMS = 16
NEW_ROW_SHARE = 0.3  # the rest of the events update rows the stream already sent
FIRST_INDEX = 1_700_000_000_000  # positions look like a binlog's, not like 1, 2, 3


@dataclass(frozen=True)
class Batch:
    task_id: str
    events: list[dict]

    @property
    def top(self) -> int:
        """Highest index in the batch (indexes rise within a stream)."""
        return self.events[-1]["index"]

    @property
    def ids(self) -> set[int]:
        """Row ids the batch writes."""
        return {event["id"] for event in self.events}


def batches(size: int, streams: int = STREAMS, seed: int = 0) -> Iterator[Batch]:
    """Yield batches of `size` events forever, round-robin over tasks s0, s1, ..."""
    rng = random.Random(seed)
    next_id = [1] * streams
    index = [FIRST_INDEX] * streams
    while True:
        for s in range(streams):
            events = []
            for _ in range(size):
                if next_id[s] == 1 or rng.random() < NEW_ROW_SHARE:
                    row_id = next_id[s]
                    next_id[s] += 1
                else:
                    row_id = rng.randrange(1, next_id[s])
                index[s] += 1
                events.append(
                    {
                        "id": row_id,
                        "name": f"User {row_id}",
                        "email": f"user{row_id}@example.com",
                        "balance": round(rng.uniform(0, 10_000), 2),
                        "active": rng.random() < 0.8,
                        "index": index[s],
                    }
                )
            yield Batch(f"s{s}", events)


def key(agent_id: str, task_id: str, kind: str) -> str:
    """Key of one stream (the bench's ids need no percent-encoding)."""
    return f"{PREFIX}:{{{agent_id}:{task_id}}}:{kind}"


def delete_agent(client: redis.Redis, agent_id: str) -> None:
    """Delete every key of `agent_id`'s streams, left over from an earlier run."""
    names = list(client.scan_iter(match=f"{PREFIX}:{{{agent_id}:*", count=1000))
    for start in range(0, len(names), 500):
        client.delete(*names[start : start + 500])


class Expected:
    """Per stream: the highest index and the distinct row ids of the batches sent."""

    def __init__(self) -> None:
        self.top: dict[str, int] = {}
        self.ids: dict[str, set[int]] = defaultdict(set)

    def add(self, task_id: str, top: int, ids: set[int]) -> None:
        self.top[task_id] = max(top, self.top.get(task_id, top))
        self.ids[task_id] |= ids

    def problems(self, client: redis.Redis, agent_id: str) -> list[str]:
        """Differences between Redis and what the sent batches must have left."""
        found = []
        for task_id, top in sorted(self.top.items()):
            checkpoint = client.hget(key(agent_id, task_id, "checkpoint"), "index")
            stream = f"{agent_id}/{task_id}"
            if checkpoint is None or int(checkpoint) != top:
                found.append(f"{stream}: checkpoint {checkpoint}, sent {top}")
            rows = client.hlen(key(agent_id, task_id, "rows"))
            if rows != (sent := len(self.ids[task_id])):
                found.append(f"{stream}: {rows} rows, sent {sent} row ids")
        return found
