"""The snapshot prune in Python: bounded steps in the request, the rest in a thread."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid

from . import metrics
from .errors import StoreUnavailable
from .store import Store

PRUNE_STEP_COUNT = 100  # HSCAN COUNT per prune_step.lua call: about 0.3 ms of Redis
PRUNE_REQUEST_BUDGET_S = 2.0  # in the is_snapshot_end request; the rest runs in a thread
PRUNE_LEASE_MS = 5000  # a runner that died is replaced this long after its last step

log = logging.getLogger("fusink.snapshots")

_threads: dict[tuple[str, str], threading.Thread] = {}
_threads_lock = threading.Lock()


def run_prune(
    store: Store, agent_id: str, task_id: str, token: str, budget_s: float = math.inf
) -> str:
    """Step the stream's pending prune until it is done, or busy, or budget_s is spent.

    Always runs at least one step. Returns 'done', 'more' or 'busy' (another runner
    holds the lease).
    """
    deadline = time.monotonic() + budget_s
    while True:
        status, deleted = store.step_prune(
            agent_id,
            task_id,
            token=token,
            now_ms=time.time_ns() // 1_000_000,
            count=PRUNE_STEP_COUNT,
            lease_ms=PRUNE_LEASE_MS,
        )
        metrics.rows_pruned(deleted)
        if status != "more" or time.monotonic() >= deadline:
            return status


def continue_prune(
    store: Store, agent_id: str, task_id: str, budget_s: float = PRUNE_REQUEST_BUDGET_S
) -> str:
    """Step the stream's prune for up to budget_s here; hand what is left to a thread.

    A no-op step ('done') when no prune is pending, so any request may call it: a
    prune left by a process that died is finished by the next one that does.
    Returns the status of the last step here ('more': a thread goes on).
    """
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    status = run_prune(store, agent_id, task_id, token, budget_s)
    if status == "more":
        _start_thread(store, agent_id, task_id, token)
    return status


def wait_for_prunes(timeout: float = 30) -> bool:
    """Wait for this process's background prunes; True if none is left running."""
    deadline = time.monotonic() + timeout
    with _threads_lock:
        threads = list(_threads.values())
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in threads)


def _start_thread(store: Store, agent_id: str, task_id: str, token: str) -> None:
    stream = (agent_id, task_id)
    with _threads_lock:
        running = _threads.get(stream)
        if running is not None and running.is_alive():
            return
        thread = threading.Thread(
            target=_prune_in_background,
            args=(store, agent_id, task_id, token),
            name=f"prune {agent_id}/{task_id}",
            daemon=True,
        )
        _threads[stream] = thread
        thread.start()


def _prune_in_background(store: Store, agent_id: str, task_id: str, token: str) -> None:
    stream = {"agent_id": agent_id, "task_id": task_id}
    try:
        status = run_prune(store, agent_id, task_id, token)
        log.info("prune finished in the background: %s", status, extra=stream)
    except StoreUnavailable as exc:
        # The prune's progress is in Redis: the stream's next request resumes it.
        log.warning("prune paused, Redis unavailable: %s", exc, extra=stream)
    except Exception:
        log.exception("prune failed", extra=stream)
    finally:
        with _threads_lock:
            if _threads.get((agent_id, task_id)) is threading.current_thread():
                del _threads[(agent_id, task_id)]
