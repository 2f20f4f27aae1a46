"""The replication rule, the local cluster's layout, and the doctor's replica check (no broker)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from liaison.cluster_health import replica_problems
from liaison.errors import ConfigError, LocalBrokerError
from liaison.local.broker import BrokerConfig, server_properties
from liaison.local.cluster import BROKERS_VARIABLE, local_brokers, node_configs
from liaison.replication import Replication
from liaison.topics import Topics


@pytest.mark.parametrize(("brokers", "factor", "isr"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_the_default_is_three_and_two_from_three_brokers_on(brokers: int, factor: int, isr: int) -> None:
    assert Replication.for_cluster(brokers) == Replication(factor, isr)


def test_settings_win_over_the_default_and_impossible_values_are_refused() -> None:
    assert Replication.for_cluster(5, factor=5, min_insync=3) == Replication(5, 3)
    assert Replication.for_cluster(3, factor=2) == Replication(2, 1)
    with pytest.raises(ConfigError, match="needs 3 brokers; the cluster has 2"):
        Replication.for_cluster(2, factor=3)
    with pytest.raises(ConfigError, match=r"min\.insync\.replicas must be between 1 and the replication"):
        Replication.for_cluster(3, min_insync=4)


def test_the_brokers_internal_topics_follow_the_same_rule(tmp_path: Path) -> None:
    single = server_properties(BrokerConfig(home=tmp_path))
    assert single["offsets.topic.replication.factor"] == "1"
    assert single["transaction.state.log.min.isr"] == "1"
    nodes = node_configs(BrokerConfig(home=tmp_path / "kafka"), 3, ports=[(1, 2), (3, 4), (5, 6)])
    props = [server_properties(n) for n in nodes]
    assert {p["offsets.topic.replication.factor"] for p in props} == {"3"}
    assert {p["transaction.state.log.replication.factor"] for p in props} == {"3"}
    assert {p["transaction.state.log.min.isr"] for p in props} == {"2"}
    assert {p["min.insync.replicas"] for p in props} == {"2"}
    assert {p["default.replication.factor"] for p in props} == {"3"}


def test_three_nodes_have_their_own_folders_ports_and_one_quorum(tmp_path: Path) -> None:
    nodes = node_configs(BrokerConfig(home=tmp_path / "kafka", port=9092), 3)
    assert [n.home.name for n in nodes] == ["kafka-1", "kafka-2", "kafka-3"]
    assert [(n.port, n.controller_port) for n in nodes] == [(9092, 9093), (9094, 9095), (9096, 9097)]
    assert [server_properties(n)["node.id"] for n in nodes] == ["1", "2", "3"]
    voters = {server_properties(n)["controller.quorum.voters"] for n in nodes}
    assert voters == {"1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"}
    assert node_configs(BrokerConfig(home=tmp_path / "kafka"), 1)[0].home.name == "kafka"  # as before
    with pytest.raises(LocalBrokerError, match="3 nodes need 3 port pairs"):
        node_configs(BrokerConfig(home=tmp_path), 3, ports=[(1, 2)])


@pytest.mark.parametrize("value", ["0", "6", "three", "-1"])
def test_a_wrong_number_of_local_brokers_fails_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                           value: str) -> None:
    monkeypatch.setenv(BROKERS_VARIABLE, value)
    with pytest.raises(LocalBrokerError, match="LIAISON_LOCAL_BROKERS must be a number of brokers from 1"):
        local_brokers()


def test_the_bus_knows_its_own_topics() -> None:
    topics = Topics("a.")
    owned = ["a.bus.audit", "a.alerts.in.FR-PN", "a._schemas", "a.receipts.in.DE-BKA", "a.replies.out.ES-CNP"]
    assert all(map(topics.owns, owned))
    assert not any(map(topics.owns, ["bus.audit", "a.orders", "b.bus.audit", "__consumer_offsets"]))


def _topic(*partitions: tuple[int, int]) -> SimpleNamespace:
    return SimpleNamespace(partitions={i: SimpleNamespace(id=i, replicas=list(range(r)), isrs=list(range(s)))
                                       for i, (r, s) in enumerate(partitions)})


def test_doctor_names_topics_out_of_sync_or_short_of_replicas() -> None:
    topics = {"bus.audit": _topic((3, 3), (3, 2)), "bus.routed": _topic((1, 1)),
              "alerts.in.FR-PN": _topic((3, 3)), "other": _topic((1, 0))}
    problems = [str(p) for p in replica_problems(topics, 3, Topics().owns)]
    assert problems == ["bus.audit: under-replicated partitions [1]", "bus.routed: 1 replicas, 3 configured"]
