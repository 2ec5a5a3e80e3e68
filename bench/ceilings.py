"""Redis-only ingest ceilings: plain MULTI/EXEC, and a naive per-row Lua guard."""

import time
from functools import partial

import orjson
import redis

import workload

SCRIPT_COMMANDS = ("cmdstat_eval", "cmdstat_evalsha")
NOT_WORK = ("cmdstat_info", "cmdstat_multi", "cmdstat_exec")
# The obvious guarded write: three redis.call()s per row. fusink must beat it.
NAIVE_GUARD = """
-- KEYS[1] checkpoint hash   KEYS[2] rows hash   KEYS[3] row-index hash
-- ARGV[1] now_ms   ARGV[2] batch top index   ARGV[3..] key, index, json triples
for i = 3, #ARGV, 3 do
  local stored = redis.call('HGET', KEYS[3], ARGV[i])
  if not stored or tonumber(ARGV[i + 1]) >= tonumber(stored) then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  end
end
local checkpoint = redis.call('HGET', KEYS[1], 'index')
if not checkpoint or tonumber(ARGV[2]) > tonumber(checkpoint) then
  redis.call('HSET', KEYS[1], 'index', ARGV[2])
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])
return 1
"""


# The cost of handing a batch's arguments to Lua and nothing else.
ARGS_ONLY = "return #ARGV"


def write_plain(client: redis.Redis, agent_id: str, batch: workload.Batch) -> None:
    """One MULTI/EXEC: a variadic HSET of every row, then the checkpoint."""
    rows = {str(event["id"]): orjson.dumps(event) for event in batch.events}
    checkpoint = {"index": batch.top, "updated_at": int(time.time() * 1000)}
    pipe = client.pipeline(transaction=True)
    pipe.hset(workload.key(agent_id, batch.task_id, "rows"), mapping=rows)
    pipe.hset(workload.key(agent_id, batch.task_id, "checkpoint"), mapping=checkpoint)
    pipe.execute()


def write_naive(script, client: redis.Redis, agent_id: str, batch: workload.Batch):
    """One call of NAIVE_GUARD (registered as `script`) for the whole batch."""
    keys = [
        workload.key(agent_id, batch.task_id, kind) for kind in ("checkpoint", "rows", "row-index")
    ]
    args = [int(time.time() * 1000), batch.top]
    for event in batch.events:
        args += (event["id"], event["index"], orjson.dumps(event))
    script(keys=keys, args=args, client=client)


def measure(client: redis.Redis, name: str, write, seconds: float, check=True) -> dict:
    """Write 1,000-event batches for `seconds` of write time; return rates and CPU."""
    agent_id = f"bench-{name}"
    workload.delete_agent(client, agent_id)
    expected = workload.Expected()
    busy = cpu = 0.0
    events = 0
    redis_cpu, redis_usec = redis_cpu_seconds(client), command_usec(client)
    for batch in workload.batches(1000, seed=1):  # generating rows is not timed
        started, cpu_started = time.perf_counter(), time.process_time()
        write(client, agent_id, batch)
        busy += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        events += len(batch.events)
        expected.add(batch.task_id, batch.top, batch.ids)
        if busy >= seconds:
            break
    redis_cpu = redis_cpu_seconds(client) - redis_cpu
    redis_ms = command_ms(redis_usec, command_usec(client))
    return {
        "phase": f"ceiling {name}",
        "batch": 1000,
        "requests_per_s": events / 1000 / busy,
        "events_per_s": events / busy,
        "app_cpu_ms_per_1k": 1e6 * cpu / events,
        "redis_cpu_ms_per_1k": 1e6 * redis_cpu / events,
        "redis_command_ms_per_1k": 1e3 * redis_ms / events,
        "problems": expected.problems(client, agent_id) if check else [],
    }


def command_usec(client: redis.Redis) -> tuple[int, int]:
    """Microseconds Redis has spent in scripts, and in all commands but INFO.

    The commands a script or a MULTI/EXEC runs are counted in their own stats
    too, so where scripts ran only the script time counts, and EXEC never does.
    """
    stats = client.info("commandstats")
    scripts = sum(stats.get(name, {}).get("usec", 0) for name in SCRIPT_COMMANDS)
    others = sum(stat["usec"] for name, stat in stats.items() if name not in NOT_WORK)
    return scripts, others


def command_ms(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Milliseconds of Redis command time between two command_usec() readings."""
    scripts, everything = (later - earlier for earlier, later in zip(before, after, strict=True))
    return (scripts or everything) / 1000


def redis_cpu_seconds(client: redis.Redis) -> float:
    """CPU seconds Redis has used (user + system), from INFO cpu."""
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def run(client: redis.Redis, seconds: float) -> list[dict]:
    """Both ceilings, 16 streams of 1,000-event batches, from this one process; then
    a script that only takes the arguments, for the share of script time that is
    moving them into Lua."""
    naive, args_only = client.register_script(NAIVE_GUARD), client.register_script(ARGS_ONLY)
    return [
        measure(client, "plain", write_plain, seconds),
        measure(client, "naive-lua", partial(write_naive, naive), seconds),
        measure(client, "args-only", partial(write_naive, args_only), seconds, check=False),
    ]
