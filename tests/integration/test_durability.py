"""WAIT_REPLICAS with a real replica, and MEMORY_HIGH_WATERMARK with a real maxmemory."""

import signal
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from flask.testing import FlaskClient

from app import create_app, keys
from app.config import Credential, Settings

from .conftest import RedisServer

API_KEY = "k1"
HEADERS = {"x-api-key": API_KEY}
CHECKPOINT = keys.checkpoint_key("fusink", keys.stream_tag("agent-1", "orders"))
ROWS = keys.rows_key("fusink", keys.stream_tag("agent-1", "orders"))
STATUS = "/fuagent-sync-status?agent_id=agent-1&task_id=orders"


@pytest.fixture
def make_client() -> Iterator[Callable[..., FlaskClient]]:
    """Return make(url, **settings): a test client of the app on the real Redis at url."""
    apps = []

    def make(url: str, **settings) -> FlaskClient:
        credentials = (Credential("key#0", API_KEY),)
        app = create_app(Settings(redis_url=url, api_keys=credentials, **settings))
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        store = app.extensions["fusink"].store
        if store is not None:
            store.client.close()


@pytest.fixture
def connect() -> Iterator[Callable[[RedisServer], redis.Redis]]:
    """Return connect(server): a decoding client for the test, closed after it."""
    clients = []

    def make(server: RedisServer) -> redis.Redis:
        clients.append(redis.Redis.from_url(server.url, decode_responses=True))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def batch(first: int, count: int = 10) -> dict:
    events = [{"id": n, "index": 100 + n, "name": "x" * 50} for n in range(first, first + count)]
    return {"agent_id": "agent-1", "task_id": "orders", "events": events}


def wait_until(predicate: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.get_json()
    assert response.headers["Retry-After"].isdigit()
    assert response.get_json()["code"] == 503


@pytest.fixture
def primary_and_replica(
    redis_factory: Callable[..., RedisServer], connect: Callable[[RedisServer], redis.Redis]
) -> tuple[RedisServer, redis.Redis, redis.Redis, RedisServer]:
    """A primary with one connected replica, and a client for each."""
    primary = redis_factory()
    replica = redis_factory("--replicaof", "127.0.0.1", str(primary.port))
    to_primary, to_replica = connect(primary), connect(replica)
    wait_until(lambda: to_replica.info("replication")["master_link_status"] == "up")
    wait_until(lambda: to_primary.info("replication")["connected_slaves"] == 1)
    return primary, to_primary, to_replica, replica


def test_wait_replicas_acknowledges_or_answers_503(primary_and_replica, make_client) -> None:
    primary, to_primary, to_replica, replica = primary_and_replica
    client = make_client(primary.url, wait_replicas=1, wait_timeout_ms=300, redis_timeout=3.0)

    assert client.post("/ingest-batch", json=batch(0), headers=HEADERS).status_code == 200
    # WAIT returned only after the replica had the batch.
    assert to_replica.hget(CHECKPOINT, "index") == "109"
    assert to_replica.hlen(ROWS) == 10

    replica.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = client.post("/ingest-batch", json=batch(10), headers=HEADERS)
        assert_unavailable(response)
        assert time.monotonic() - started < 3
        # The primary took the batch; only its copy is unconfirmed.
        assert to_primary.hget(CHECKPOINT, "index") == "119"
    finally:
        replica.process.send_signal(signal.SIGCONT)

    # The agent's retry is a no-op on the primary and is acknowledged this time.
    response = client.post("/ingest-batch", json=batch(10), headers=HEADERS)
    assert response.status_code == 200, response.get_json()
    assert to_primary.hget(CHECKPOINT, "index") == "119"
    assert to_primary.hget(CHECKPOINT, "batches") == "3"
    assert to_replica.hlen(ROWS) == 20


def test_without_a_replica_wait_replicas_answers_503(redis_url: str, make_client) -> None:
    client = make_client(redis_url, wait_replicas=1, wait_timeout_ms=100, redis_timeout=2.0)
    assert_unavailable(client.post("/ingest-batch", json=batch(0), headers=HEADERS))
    # Reads never wait.
    assert client.get(STATUS, headers=HEADERS).status_code == 200


def fill(client: redis.Redis, until: float) -> int:
    """Write 64 KiB values until used_memory passes `until` of maxmemory."""
    maxmemory = client.info("memory")["maxmemory"]
    n = 0
    while client.info("memory")["used_memory"] <= until * maxmemory:
        client.set(f"filler:{n}", b"x" * 65536)
        n += 1
    return n


def test_memory_above_the_watermark_refuses_ingest_but_serves_reads(
    redis_factory: Callable[..., RedisServer], connect, make_client
) -> None:
    server = redis_factory("--maxmemory", "20mb", "--maxmemory-policy", "noeviction")
    direct = connect(server)
    client = make_client(server.url, memory_high_watermark=0.8)
    assert client.post("/ingest-batch", json=batch(0), headers=HEADERS).status_code == 200

    fillers = fill(direct, until=0.85)

    def refused() -> bool:
        response = client.post("/ingest-batch", json=batch(10), headers=HEADERS)
        if response.status_code == 200:
            return False
        assert_unavailable(response)
        return True

    # The INFO answer is cached for a second, so the switch may take that long.
    wait_until(refused, timeout=5)
    assert direct.hget(CHECKPOINT, "index") in ("109", "119")
    reply = client.get(STATUS, headers=HEADERS)
    assert reply.status_code == 200
    assert client.get("/readyz").status_code == 200

    direct.delete(*(f"filler:{n}" for n in range(fillers)))
    wait_until(
        lambda: client.post("/ingest-batch", json=batch(20), headers=HEADERS).status_code == 200,
        timeout=5,
    )
    assert direct.hget(CHECKPOINT, "index") == "129"


def test_out_of_memory_in_the_script_is_a_503_and_writes_nothing(
    redis_factory: Callable[..., RedisServer], connect, make_client
) -> None:
    server = redis_factory("--maxmemory-policy", "noeviction")
    direct = connect(server)
    client = make_client(server.url, memory_high_watermark=0)  # let Redis itself refuse
    assert client.post("/ingest-batch", json=batch(0), headers=HEADERS).status_code == 200
    before = {"checkpoint": direct.hgetall(CHECKPOINT), "rows": direct.hgetall(ROWS)}

    direct.set("filler", b"x" * 2_000_000)
    direct.config_set("maxmemory", 1_000_000)  # now below used_memory: writes get OOM
    try:
        # A batch with a suggestion writes before the rows; one without writes rows first.
        for body in (batch(10), {**batch(20), "snapshot_sync_suggested": True}):
            assert_unavailable(client.post("/ingest-batch", json=body, headers=HEADERS))
        assert {"checkpoint": direct.hgetall(CHECKPOINT), "rows": direct.hgetall(ROWS)} == before
        assert client.get(STATUS, headers=HEADERS).get_json() == {"index": 109}
    finally:
        direct.config_set("maxmemory", 0)
    assert client.post("/ingest-batch", json=batch(10), headers=HEADERS).status_code == 200
