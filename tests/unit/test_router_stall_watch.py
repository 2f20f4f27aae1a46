"""The router's stall watch: records waiting and nothing committed for too long restarts its clients."""

from __future__ import annotations

import time

import pytest

from services.router.app import Router
from services.router.settings import RouterSettings


@pytest.fixture
def router() -> Router:
    return Router(RouterSettings(stall_restart_s=30.0))


def test_waiting_records_and_no_commit_for_too_long_ask_for_a_restart(router: Router) -> None:
    router._progress = time.monotonic() - 10
    router._watch_stall(500, fresh=False)
    assert not router._stalled  # 10 s without a commit: within the allowance
    router._progress = time.monotonic() - 31
    router._watch_stall(500, fresh=False)
    assert router._stalled


def test_a_lag_that_cannot_be_measured_counts_as_waiting(router: Router) -> None:
    router._progress = time.monotonic() - 31
    router._watch_stall(None, fresh=True)
    assert router._stalled


def test_an_idle_router_is_never_stalled(router: Router) -> None:
    router._progress = time.monotonic() - 3600
    router._watch_stall(0, fresh=True)
    assert not router._stalled
    assert time.monotonic() - router._progress < 1


def test_no_lag_seen_by_a_stuck_fetcher_proves_nothing(router: Router) -> None:
    """Watermarks the last fetch saw do not move when fetching stopped: they never reset the watch."""
    router._progress = time.monotonic() - 31
    router._watch_stall(0, fresh=False)
    assert time.monotonic() - router._progress > 30
    router._watch_stall(7, fresh=True)  # the leaders say records wait
    assert router._stalled
