"""End-to-end fuagent-sim runs against gunicorn (2 workers) and a real redis-server."""

from collections.abc import Callable

import pytest

from .conftest import RedisServer, Server, assert_sim_passed, run_sim

pytestmark = pytest.mark.simulator

SEED = "20240611"
API_KEY = "k1"
BASIC_USER = "sim:secret"


def service_env(redis_server: RedisServer, **extra: str) -> dict[str, str]:
    """Return the service settings shared by every server in this module."""
    return {
        "REDIS_URL": redis_server.url,
        "API_KEYS": API_KEY,
        "BASIC_AUTH_USERS": BASIC_USER,
        # The runs below leave out --expect-prune, so the sink must keep its rows.
        "SNAPSHOT_PRUNE": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def server(gunicorn_server: Callable[..., Server], redis_server: RedisServer) -> Server:
    """gunicorn with the default settings."""
    return gunicorn_server(service_env(redis_server), workers=2)


@pytest.fixture(scope="module")
def zero_server(gunicorn_server: Callable[..., Server], redis_server: RedisServer) -> Server:
    """gunicorn answering a missing checkpoint with {"index": 0}."""
    return gunicorn_server(service_env(redis_server, MISSING_CHECKPOINT="zero"), workers=2)


def assert_run_passes(server: Server, redis_url: str, *args: str) -> None:
    """Run fuagent-sim against server, verify Redis, and require a PASS."""
    auth = args if "--basic" in args else ("--api-key", API_KEY, *args)
    proc = run_sim(
        "--spec-url",
        f"{server.url}/openapi.json",
        "--verify-redis",
        redis_url,
        "--seed",
        SEED,
        "--wait",
        "30",
        "--strict-layout",
        *auth,
    )
    assert_sim_passed(proc, server)


def test_plain_run_passes(server: Server, redis_url: str) -> None:
    assert_run_passes(server, redis_url)


def test_resumed_run_continues_from_the_checkpoint(server: Server, redis_url: str) -> None:
    assert_run_passes(server, redis_url, "--resume")


def test_replayed_batches_change_nothing(server: Server, redis_url: str) -> None:
    assert_run_passes(server, redis_url, "--replay")


def test_concurrent_streams_stay_apart(server: Server, redis_url: str) -> None:
    assert_run_passes(server, redis_url, "--streams", "4")


def test_suggested_snapshot_is_requested_and_completes(server: Server, redis_url: str) -> None:
    assert_run_passes(server, redis_url, "--suggest-snapshot", "5")


def test_basic_auth_run_passes(server: Server, redis_url: str) -> None:
    assert_run_passes(server, redis_url, "--basic", BASIC_USER)


def test_tricky_ids_are_encoded_in_keys_and_urls(server: Server, redis_url: str) -> None:
    assert_run_passes(server, redis_url, "--tricky-ids")


def test_missing_checkpoint_answered_as_zero_passes(zero_server: Server, redis_url: str) -> None:
    assert_run_passes(zero_server, redis_url)


def test_all_scenarios_together_pass(server: Server, redis_url: str) -> None:
    assert_run_passes(
        server,
        redis_url,
        "--suggest-snapshot",
        "5",
        "--resume",
        "--replay",
        "--streams",
        "3",
        "--tricky-ids",
    )
