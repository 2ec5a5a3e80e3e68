"""Property-based run of the whole API from its own spec (schemathesis), against gunicorn."""

import json
from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import positive_data_acceptance

from .conftest import RedisServer, Server

API_KEY = "k1"
EXAMPLES = 25  # per operation and generation mode: the whole run stays well under a minute


@pytest.fixture(scope="module")
def api_server(gunicorn_server: Callable[..., Server], redis_server: RedisServer) -> Server:
    return gunicorn_server({"REDIS_URL": redis_server.url, "API_KEYS": API_KEY}, workers=2)


def check_operation(operation, mode: schemathesis.GenerationMode) -> None:
    """Send EXAMPLES generated requests; raise on the first answer the spec does not allow."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        # A cursor is opaque: the spec cannot tell a made-up one (400) from a real one.
        opaque = [positive_data_acceptance] if "cursor" in (case.query or {}) else []
        case.call_and_validate(headers={"x-api-key": API_KEY}, timeout=10, excluded_checks=opaque)

    run()


def test_every_operation_answers_as_its_spec_says(api_server: Server, redis_url: str) -> None:
    """No 5xx, and every status, header and body is one the spec documents.

    The schemathesis pytest loader does not run under pytest 9, so this drives
    Hypothesis itself, one operation at a time, and reports every failing one.
    """
    schema = schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 4
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            try:
                check_operation(operation, mode)
            except Unsatisfiable:
                pass  # nothing to make invalid: the operation takes no input
            except (Exception, BaseExceptionGroup) as exc:  # report every failing operation
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    if failures:
        pytest.fail("\n\n".join([*failures, "--- server errors", *server_errors(api_server)]))


def server_errors(server: Server) -> list[str]:
    """The last lines of each traceback the server logged."""
    found = []
    for line in server.log_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "traceback" in record:
            found.append("\n".join(record["traceback"].splitlines()[-3:]))
    return found[-5:]
