"""The bad-input tests of tests/unit, run again on a real redis-server."""

from tests.unit.test_bad_input import *  # noqa: F403 (collected again, on real Redis)
