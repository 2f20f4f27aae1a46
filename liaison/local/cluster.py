"""Several local KRaft nodes on loopback, each broker and controller, started and stopped as one.

`LIAISON_LOCAL_BROKERS=3` gives `make up` (and the test fixtures that ask for it) three nodes, each
with its own folder, ports and log, secured exactly like the single broker. One node is the
default: it keeps the folder `kafka/` it always had, and three nodes live in `kafka-1/` to `kafka-3/`
beside it, so switching never mixes their data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from liaison.core.settings import KafkaSettings
from liaison.errors import LocalBrokerError
from liaison.local.broker import BrokerConfig, LocalBroker, new_cluster_id, wait_until_ready
from liaison.local.process import stop_pid
from liaison.replication import Replication

BROKERS_VARIABLE = "LIAISON_LOCAL_BROKERS"
MAX_LOCAL_BROKERS = 5


def local_brokers() -> int:
    """`LIAISON_LOCAL_BROKERS` (default 1); anything else than 1 to 5 fails in one line."""
    value = os.environ.get(BROKERS_VARIABLE, "1").strip()
    if not value.isdigit() or not 1 <= int(value) <= MAX_LOCAL_BROKERS:
        raise LocalBrokerError(f"{BROKERS_VARIABLE} must be a number of brokers from 1 to "
                               f"{MAX_LOCAL_BROKERS}, not {value!r}")
    return int(value)


def node_configs(base: BrokerConfig, size: int, *,
                 ports: Sequence[tuple[int, int]] = ()) -> list[BrokerConfig]:
    """`size` nodes shaped like `base`: node k in `<home>-k`, on `ports[k-1]` (broker, controller),
    by default `base.port + 2(k-1)` and the port after it; its metrics on `jmx_exporter_port + k-1`."""
    if size == 1:
        return [base]
    if ports and len(ports) != size:
        raise LocalBrokerError(f"{size} nodes need {size} port pairs, not {len(ports)}")
    pairs = list(ports) or [(base.port + 2 * k, base.port + 2 * k + 1) for k in range(size)]
    voters = tuple((k + 1, base.host, controller) for k, (_, controller) in enumerate(pairs))
    replication = Replication.for_cluster(size)
    exporter = base.jmx_exporter_port
    return [replace(base, home=base.home.with_name(f"{base.home.name}-{k + 1}"), port=port,
                    controller_port=controller, node_id=k + 1, voters=voters, replication=replication,
                    jmx_exporter_port=None if exporter is None else exporter + k)
            for k, (port, controller) in enumerate(pairs)]


def cluster_id_of(data_dir: Path) -> str | None:
    """The cluster id a node's storage was formatted with (None: not formatted)."""
    meta = data_dir / "meta.properties"
    if not meta.is_file():
        return None
    for line in meta.read_text().splitlines():
        if line.startswith("cluster.id="):
            return line.split("=", 1)[1].strip()
    return None


class LocalCluster:
    """The nodes of one local cluster; each node's pid file makes it findable later."""

    def __init__(self, configs: Sequence[BrokerConfig]) -> None:
        if not configs:
            raise LocalBrokerError("a cluster needs at least one node")
        self.brokers = [LocalBroker(c) for c in configs]

    @classmethod
    def of(cls, base: BrokerConfig, size: int = 1, **kwargs: Sequence[tuple[int, int]]) -> LocalCluster:
        return cls(node_configs(base, size, **kwargs))

    @property
    def size(self) -> int:
        return len(self.brokers)

    @property
    def bootstrap(self) -> str:
        return ",".join(b.config.bootstrap for b in self.brokers)

    @property
    def first(self) -> BrokerConfig:
        return self.brokers[0].config

    def admin_settings(self) -> KafkaSettings:
        """How the bus's admin reaches the cluster: through every node."""
        return self.first.admin_settings().model_copy(update={"bootstrap_servers": self.bootstrap})

    def node(self, node_id: int) -> LocalBroker:
        for broker in self.brokers:
            if broker.config.node_id == node_id:
                return broker
        raise LocalBrokerError(f"no node {node_id} in this cluster")

    def formatted(self) -> bool:
        return any((b.config.data_dir / "meta.properties").exists() for b in self.brokers)

    def start(self, *, timeout_s: float = 90.0) -> list[int]:
        """Start the nodes that do not run (all with one cluster id) and wait until the metadata
        lists every node; return their pids."""
        ids = {cid for b in self.brokers if (cid := cluster_id_of(b.config.data_dir)) is not None}
        if len(ids) > 1:
            raise LocalBrokerError(f"the nodes of {self.first.home} were formatted for different clusters: "
                                   "`make down clean` starts over")
        cluster_id = ids.pop() if ids else None
        if cluster_id is None and self.size > 1:
            cluster_id = new_cluster_id()
        pids = [b.launch(cluster_id=cluster_id) for b in self.brokers]
        try:
            for broker, pid in zip(self.brokers, pids, strict=True):
                broker.wait_ready(pid, timeout_s=timeout_s)
            wait_until_ready(self.admin_settings(), timeout_s=timeout_s, brokers=self.size)
        except LocalBrokerError:
            for pid in pids:
                stop_pid(pid, grace_s=5)
            raise
        return pids

    def stop(self, *, grace_s: float = 30.0) -> bool:
        """Stop every node we started (by pid), all at once; False when none was running.

        One by one, the last nodes would wait out their grace: a node's controlled shutdown asks
        the quorum, which is gone once a majority has stopped.
        """
        with ThreadPoolExecutor(max_workers=self.size) as pool:
            stopped = list(pool.map(lambda b: b.stop(grace_s=grace_s), self.brokers))
        return any(stopped)
