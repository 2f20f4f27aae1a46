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
    router._watch_stall(500)
    assert not router._stalled  # 10 s without a commit: within the allowance
    router._progress = time.monotonic() - 31
    router._watch_stall(500)
    assert router._stalled


def test_a_lag_that_cannot_be_measured_counts_as_waiting(router: Router) -> None:
    router._progress = time.monotonic() - 31
    router._watch_stall(None)
    assert router._stalled


def test_an_idle_router_is_never_stalled(router: Router) -> None:
    router._progress = time.monotonic() - 3600
    router._watch_stall(0)
    assert not router._stalled
    assert time.monotonic() - router._progress < 1
