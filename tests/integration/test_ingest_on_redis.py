"""The ingest tests of tests/unit, run again on a real redis-server.

fakeredis runs the same Lua, but real Redis is the authority on its semantics.
"""

from tests.unit.test_ingest import *  # noqa: F403 (collected again, on real Redis)
