"""The row-key rule tests of tests/unit, run again on a real redis-server."""

from tests.unit.test_row_key_rules import *  # noqa: F403 (collected again, on real Redis)
