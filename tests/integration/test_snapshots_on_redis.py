"""The snapshot and /streams tests of tests/unit, run again on a real redis-server."""

from tests.unit.test_snapshots import *  # noqa: F403 (collected again, on real Redis)
from tests.unit.test_streams import *  # noqa: F403
