"""`liaison schemas register / check` against a running registry, through the console entry point."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from liaison.errors import RegistryError
from liaison.registry_client import RegistryClient
from liaison.schemas import default_schema_dir
from services.registry.app import RegistryServer
from services.registry.settings import RegistrySettings
from tests.kafka_helpers import unique_name


def _cli(registry_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LIAISON_REGISTRY_URL=registry_url)
    return subprocess.run([sys.executable, "-m", "liaison.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def _incompatible_copy(target: Path) -> Path:
    """The schema folder with a required field added to Query (old data cannot be read)."""
    shutil.copytree(default_schema_dir(), target)
    path = target / "liaison.Query.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "warrant_number", "type": "string", "doc": "A new required field."})
    path.write_text(json.dumps(schema))
    return target


async def test_register_is_idempotent_and_check_refuses_an_incompatible_change(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Registering twice changes nothing; a breaking change fails `check` and is refused with 409."""
    settings = RegistrySettings(bootstrap_servers=kafka_bootstrap, registry_port=0,
                                registry_topic=unique_name("_schemas"))
    async with RegistryServer(settings) as registry:
        first = await asyncio.to_thread(_cli, registry.url, "schemas", "register", "--json")
        assert first.returncode == 0, first.stderr
        assert {row["result"] for row in json.loads(first.stdout)} == {"registered"}
        again = await asyncio.to_thread(_cli, registry.url, "schemas", "register", "--json")
        assert {row["result"] for row in json.loads(again.stdout)} == {"unchanged"}

        ok = await asyncio.to_thread(_cli, registry.url, "schemas", "check")
        assert ok.returncode == 0, ok.stdout + ok.stderr

        broken = _incompatible_copy(tmp_path / "schemas")
        bad = await asyncio.to_thread(_cli, registry.url, "schemas", "check", "--dir", str(broken))
        assert bad.returncode == 1
        assert "INCOMPATIBLE" in bad.stdout
        assert "liaison.Query" in bad.stdout

        from liaison.schemas import load_catalog  # noqa: PLC0415

        async with RegistryClient(registry.url) as client:
            with pytest.raises(RegistryError) as refused:
                await client.register("liaison.Query", load_catalog(broken).standalone_json("Query"))
        assert refused.value.status == 409


async def test_check_without_a_registry_says_so_in_one_line(tmp_path: Path) -> None:
    """A registry that is down gives one clear line and a non-zero exit, not a traceback."""
    result = await asyncio.to_thread(_cli, "http://127.0.0.1:9", "schemas", "check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "unreachable" in result.stderr
