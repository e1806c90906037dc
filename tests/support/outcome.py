"""Whether a test failed, for its fixtures: tests/conftest.py records it in the item's
stash after the test's call, so that a fixture's teardown may print what helps to
understand the failure (a daemon's log, say) only then."""

from __future__ import annotations

import pytest

CALL_FAILED = pytest.StashKey[bool]()


def call_failed(request: pytest.FixtureRequest) -> bool:
    """True when the test of request failed (in its call, not in a fixture)."""
    return request.node.stash.get(CALL_FAILED, False)
