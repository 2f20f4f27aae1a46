"""Helpers of the CLI tests: run `python -m liaison.cli.main` against a bus, and one bus per module.

(No tests here: the other `test_cli_*` modules import these helpers.)
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio

from liaison.core.settings import KafkaSettings
from liaison.local.paths import REPO_ROOT
from tests.bus_harness import Bus, running_bus

CLOSED_PORT = "127.0.0.1:1"


@dataclass
class Result:
    code: int
    out: str
    err: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.out)

    def one_error_line(self) -> str:
        """The single line a failing command writes on stderr (and never a traceback)."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got: {self.err!r}"
        assert lines[0].startswith("liaison: "), lines[0]
        assert "Traceback" not in self.err
        return lines[0]


STATE_DIR = Path(tempfile.mkdtemp(prefix="liaison-cli-state-"))
"""Where the CLI of the tests keeps its audit index: never the repository's `.run/`."""
atexit.register(shutil.rmtree, STATE_DIR, ignore_errors=True)


def cli_env(settings: KafkaSettings | None = None, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIAISON_")}
    env["LIAISON_STATE_DIR"] = str(STATE_DIR)
    if settings is not None:
        env.update(LIAISON_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
                   LIAISON_REGISTRY_URL=settings.registry_url, LIAISON_TOPIC_PREFIX=settings.topic_prefix)
    env.update(overrides)
    return env


async def cli(*args: str, settings: KafkaSettings | None = None, env: dict[str, str] | None = None,
              timeout_s: float = 60.0) -> Result:
    """Run the CLI in a subprocess without blocking the event loop (the bus's router runs on it)."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "liaison.cli.main", *args, cwd=REPO_ROOT,
        env=env if env is not None else cli_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode(), time.monotonic() - started)


def module_bus(**kwargs: Any) -> Any:
    """A fixture: one bus for all the tests of a module (they use their own case ids and agencies)."""

    @pytest_asyncio.fixture(scope="module", loop_scope="module")
    async def bus(kafka_bootstrap: str) -> AsyncIterator[Bus]:
        async with running_bus(kafka_bootstrap, **kwargs) as running:
            yield running

    return bus
