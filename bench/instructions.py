"""Instructions per request of fusink's ingest (1 event) and status paths, in process.

The requests go through app/worker.py's WsgiInLoop in an asyncio loop, as gunicorn's
worker calls them (a greenlet each, their Redis commands through the loop's
pipeline), `--concurrency` at a time, against a real Redis. Under valgrind's
callgrind this counts the user-space instructions of two runs that differ only in
their number of requests; the difference per request leaves start-up out. Unlike
CPU time on a shared 2-core VM (which moves by a fifth from run to run), the count
repeats to within a fraction of a percent, so a change of 1 % shows.

Usage: python bench/instructions.py [--redis-url URL] [--phases ingest,status] [--events N]
(needs valgrind: apt-get install valgrind; about a minute per phase; without
--redis-url it starts a redis-server of its own, as bench/run.py does)
"""

import argparse
import asyncio
import contextlib
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import run  # bench/run.py: its throwaway redis-server

RUNS = (300, 1300)  # requests in the two counted runs
API_KEY = "benchkey"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="an existing Redis (default: start one)")
    parser.add_argument("--phases", type=lambda text: text.split(","), default=["ingest", "status"])
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--events", type=int, default=1, help="events per ingest batch")
    parser.add_argument("--requests", type=int, help=argparse.SUPPRESS)  # the counted run
    return parser.parse_args(argv)


def count(args: argparse.Namespace, phase: str, requests: int) -> int:
    """Instructions callgrind counts for one run of `requests` requests."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, __file__, "--redis-url", args.redis_url, "--phases", phase]
    command += ["--concurrency", str(args.concurrency), "--events", str(args.events)]
    command += ["--requests", str(requests)]
    done = subprocess.run(command, capture_output=True, text=True)
    found = re.search(r"Collected : ([\d,]+)", done.stderr)
    if done.returncode or not found:
        sys.exit(f"{phase}: the counted run failed:\n{done.stderr[-3000:]}")
    return int(found.group(1).replace(",", ""))


def events(first: dict, count: int) -> list[dict]:
    """`count` rows like `first`, each with its own id and index."""
    return [dict(first, id=first["id"] + n, index=first["index"] + n) for n in range(count)]


def serve(args: argparse.Namespace, phase: str) -> None:
    """Call the app `args.requests` times for `phase`, plus a warm-up."""
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="fusink-ir-"))
    os.environ.update(REDIS_URL=args.redis_url, API_KEYS=API_KEY)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import layers  # the request bodies of bench/layers.py
    import orjson

    from app import create_app, logs  # after the environment is set
    from app.worker import WsgiInLoop

    logs.configure()
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")
    asgi = WsgiInLoop(create_app())
    body = orjson.dumps(dict(layers.BODY, events=events(layers.EVENT, args.events)))
    headers = [(b"host", b"127.0.0.1:8000"), (b"x-api-key", API_KEY.encode())]
    common = {"type": "http", "http_version": "1.1", "scheme": "http", "root_path": ""}
    common.update(server=("127.0.0.1", 8000), client=("127.0.0.1", 50000))
    ingest = dict(common, method="POST", path="/ingest-batch", raw_path=b"/ingest-batch")
    ingest.update(query_string=b"", headers=headers + [(b"content-type", b"application/json")])
    ingest["headers"].append((b"content-length", str(len(body)).encode()))
    path = "/fuagent-sync-status"
    status = dict(common, method="GET", path=path, raw_path=path.encode(), headers=headers)
    status["query_string"] = b"agent_id=layers&task_id=s0"
    scope = ingest if phase == "ingest" else status
    answers = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            answers.append(message["status"])

    async def one_after_another(scope, requests: int):
        for _ in range(requests):
            await asgi(dict(scope), receive, send)

    async def main():
        await one_after_another(ingest, 1)  # the stream the status reads
        for requests in (50 * args.concurrency, args.requests):
            await asyncio.gather(
                *(
                    one_after_another(scope, requests // args.concurrency)
                    for _ in range(args.concurrency)
                )
            )

    asyncio.run(main())
    if set(answers) != {200}:
        sys.exit(f"{phase}: answered {sorted(set(answers))}, not only 200")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.requests is not None:  # a counted run, under valgrind
        serve(args, args.phases[0])
        return 0
    with contextlib.ExitStack() as stack:
        if not args.redis_url:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fusink-ir-")))
            args.redis_url = stack.enter_context(run.redis_server(tmp, None))
        for phase in args.phases:
            fewer, more = (count(args, phase, requests) for requests in RUNS)
            per_request = (more - fewer) / (RUNS[1] - RUNS[0])
            batch = f" ({args.events} events)" if phase == "ingest" else ""
            print(f"{phase}{batch}: {per_request:,.0f} instructions per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
