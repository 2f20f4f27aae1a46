"""The broker's JMX exporter agent: on the server's command line only when a port is asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from liaison.errors import LocalBrokerError
from liaison.local import paths
from liaison.local.broker import MAIN_CLASS, BrokerConfig, LocalBroker, jmx_exporter_options


def test_no_exporter_port_means_no_agent(tmp_path: Path) -> None:
    cfg = BrokerConfig(home=tmp_path)
    assert jmx_exporter_options(cfg) == ()
    assert not any(arg.startswith("-javaagent") for arg in LocalBroker(cfg)._java(MAIN_CLASS, "x"))


def test_the_agent_serves_on_the_broker_host_and_the_port_asked_for(tmp_path: Path) -> None:
    """`-javaagent:<jar>=<host>:<port>:<config>`, a JVM option (before the classpath and main class)."""
    cfg = BrokerConfig(home=tmp_path, host="127.0.0.1", jmx_exporter_port=19404)
    (option,) = jmx_exporter_options(cfg)
    assert option == (f"-javaagent:{paths.jmx_exporter_agent()}="
                      f"127.0.0.1:19404:{paths.jmx_exporter_config()}")
    assert paths.jmx_exporter_config().is_file()
    command = LocalBroker(cfg)._java(MAIN_CLASS, str(cfg.properties_file))
    assert command.index(option) < command.index("-cp") < command.index(MAIN_CLASS)


def test_a_missing_agent_is_one_line_naming_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for the exporter without `make kafka` having copied its agent fails before the JVM starts."""
    monkeypatch.setenv("LIAISON_KAFKA_AGENTS", str(tmp_path / "agents"))
    broker = LocalBroker(BrokerConfig(home=tmp_path / "kafka", jmx_exporter_port=19404))
    with pytest.raises(LocalBrokerError, match=r"JMX exporter agent missing at .*agents.*: run `make kafka`"):
        broker.check_prerequisites()
    LocalBroker(BrokerConfig(home=tmp_path / "kafka")).check_prerequisites()  # not needed without a port
