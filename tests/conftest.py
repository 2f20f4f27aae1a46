"""Session fixtures: a real Kafka broker for the integration tests, started here and stopped here."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from liaison.errors import LocalBrokerError
from liaison.local.broker import BrokerConfig, LocalBroker, free_port
from liaison.local.process import running_children, stop_pid


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Every process a test started is stopped by the end of the session (by pid, never by name)."""
    yield
    leftovers = running_children()
    for pid, _ in leftovers:
        stop_pid(pid, grace_s=10)
    assert leftovers == [], f"tests left processes running: {leftovers}"


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """A test that configures structlog (a CLI call does) binds it to the stream pytest captured
    for that test; the next test starts from the defaults instead of writing to a closed file."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real broker: `LIAISON_TEST_BOOTSTRAP`, or one started for the session.

    A missing Java or Kafka is a failure with the fix in its message, never a skip.
    """
    external = os.environ.get("LIAISON_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="liaison-test-kafka-") as home:
        broker = LocalBroker(BrokerConfig(home=Path(home), port=free_port(),
                                          controller_port=free_port(), heap_mb=768))
        try:
            broker.start(timeout_s=90)
        except LocalBrokerError as exc:
            pytest.fail(f"could not start the test broker: {exc}", pytrace=False)
        try:
            yield broker.config.bootstrap
        finally:
            broker.stop(grace_s=20)

