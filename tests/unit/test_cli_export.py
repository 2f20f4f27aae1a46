"""`liaison export strimzi` from a directory file: one-line errors, the same text every time, --out files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from liaison.cli.main import app
from liaison.directory import Directory
from liaison.provision import DEFAULT_DIRECTORY
from liaison.security.acls import SERVICES

DIRECTORY = str(DEFAULT_DIRECTORY)
ENV = {"LIAISON_BOOTSTRAP_SERVERS": "127.0.0.1:1", "LIAISON_TOPIC_PREFIX": "sec."}


def _invoke(*args: str, **env: str) -> Any:
    return CliRunner().invoke(app, ["export", "strimzi", *args], env={**ENV, **env})


def test_help_has_an_example() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0, result.stderr
    assert "Example: liaison export strimzi" in result.stdout


@pytest.mark.parametrize(("args", "env", "code", "expected"), [
    (["--directory", DIRECTORY, "--replicas", "0"], {}, 2, "Invalid value for '--replicas'"),
    (["--directory", DIRECTORY, "--replicas", "2", "--min-insync", "3"], {}, 2,
     "--min-insync 3 is more than --replicas 2"),
    (["--directory", DIRECTORY, "--cluster", "Bus_EU"], {}, 2, "--cluster 'Bus_EU'"),
    (["--directory", DIRECTORY, "--external", "ingress"], {}, 2, "'ingress' is not one of"),
    (["--directory", DIRECTORY, "--storage-size", "lots"], {}, 2, "not a Kubernetes quantity"),
    (["--directory", "/nonexistent/directory.yaml"], {}, 2, "cannot read directory file"),
    (["--directory", DIRECTORY, "--policy", "/nonexistent/policy.yaml"], {}, 2, "cannot read policy file"),
    (["--directory", DIRECTORY], {"LIAISON_TOPIC_PREFIX": "Staging."}, 2, "must be a Kubernetes name"),
    (["--directory", DIRECTORY], {"LIAISON_AGENCY_REQUEST_PERCENTAGE": "12.5"}, 2, "a whole number"),
    (["--directory", DIRECTORY, "--bogus"], {}, 2, "No such option: --bogus"),
    (["--timeout", "5"], {}, 1, "no Kafka broker answers at 127.0.0.1:1"),
])
def test_wrong_arguments_give_one_line(args: list[str], env: dict[str, str], code: int,
                                      expected: str) -> None:
    """Wrong input is one line on stderr starting `liaison:`, no traceback, nothing on stdout."""
    result = _invoke(*args, **env)
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("liaison: ")
    assert expected in lines[0]
    assert result.stdout == ""


def test_the_stream_is_the_same_every_time_and_parses() -> None:
    first, second = _invoke("--directory", DIRECTORY), _invoke("--directory", DIRECTORY)
    assert first.exit_code == 0, first.stderr
    assert first.stdout == second.stdout
    kinds = [doc["kind"] for doc in yaml.safe_load_all(first.stdout)]
    assert kinds[:2] == ["Kafka", "KafkaNodePool"]
    assert kinds[2:] == sorted(kinds[2:], key=["KafkaTopic", "KafkaUser"].index)


def test_out_writes_one_file_per_kind_with_the_stream_s_resources(tmp_path: Path) -> None:
    stream = _invoke("--directory", DIRECTORY, "--namespace", "bus")
    result = _invoke("--directory", DIRECTORY, "--namespace", "bus", "--out", str(tmp_path / "k8s"))
    assert result.exit_code == 0, result.stderr
    directory = Directory.from_file(DEFAULT_DIRECTORY)
    topics = 8 + 7 * len(directory.agencies)  # the bus's seven and the registry's; an agency's seven
    users = 1 + len(SERVICES) + len(directory.active_agencies())  # the admin, the services, the agencies
    assert result.stdout.strip() == (f"{tmp_path / 'k8s'}: 2 cluster resources, {topics} topics, "
                                     f"{users} users (kafka.yaml, topics.yaml, users.yaml)")
    files = sorted((tmp_path / "k8s").iterdir())
    assert [f.name for f in files] == ["kafka.yaml", "topics.yaml", "users.yaml"]
    kinds = [{doc["kind"] for doc in yaml.safe_load_all(f.read_text())} for f in files]
    assert kinds == [{"Kafka", "KafkaNodePool"}, {"KafkaTopic"}, {"KafkaUser"}]
    written = [doc for f in files for doc in yaml.safe_load_all(f.read_text())]
    assert written == list(yaml.safe_load_all(stream.stdout))
    before = {f.name: f.read_bytes() for f in files}
    again = _invoke("--directory", DIRECTORY, "--namespace", "bus", "--out", str(tmp_path / "k8s"))
    assert again.exit_code == 0, again.stderr
    assert {f.name: f.read_bytes() for f in files} == before


def test_out_onto_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    result = _invoke("--directory", DIRECTORY, "--out", str(tmp_path / "taken"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "is a file" in lines[0]
