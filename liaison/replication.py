"""How many copies of each topic the bus keeps, and how many must have a write before it counts.

One rule for every topic the bus creates (its own, the agencies', the registry's) and for the
broker's internal topics (consumer offsets, transaction state): factor 3 and
`min.insync.replicas` 2 on a cluster of three or more brokers. Then one broker may be lost with no
write refused, and a write acknowledged with `acks=all` is on two disks before anyone reads it.
A smaller cluster keeps one copy per broker and accepts a write on one.
"""

from __future__ import annotations

from dataclasses import dataclass

from liaison.errors import ConfigError

DEFAULT_FACTOR = 3
MIN_INSYNC = "min.insync.replicas"


@dataclass(frozen=True)
class Replication:
    factor: int
    min_insync: int

    @classmethod
    def for_cluster(cls, brokers: int, *, factor: int | None = None,
                    min_insync: int | None = None) -> Replication:
        """The settings' values, else the defaults for `brokers`; an impossible pair is a ConfigError."""
        if brokers < 1:
            raise ConfigError("the cluster has no broker to place replicas on")
        chosen = factor if factor is not None else min(DEFAULT_FACTOR, brokers)
        if chosen < 1:
            raise ConfigError(f"replication factor must be at least 1, not {chosen}")
        if chosen > brokers:
            raise ConfigError(f"replication factor {chosen} needs {chosen} brokers; the cluster has "
                              f"{brokers} (LIAISON_REPLICATION_FACTOR)")
        isr = min_insync if min_insync is not None else (2 if chosen >= DEFAULT_FACTOR else 1)
        if not 1 <= isr <= chosen:
            raise ConfigError(f"min.insync.replicas must be between 1 and the replication factor "
                              f"{chosen}, not {isr} (LIAISON_MIN_INSYNC_REPLICAS)")
        return cls(chosen, isr)

    def topic_config(self) -> dict[str, str]:
        return {MIN_INSYNC: str(self.min_insync)}

    def broker_properties(self) -> dict[str, str]:
        """The broker's defaults and its internal topics, under the same rule as the bus's topics."""
        factor, isr = str(self.factor), str(self.min_insync)
        return {
            "default.replication.factor": factor,
            MIN_INSYNC: isr,
            "offsets.topic.replication.factor": factor,
            "transaction.state.log.replication.factor": factor,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": factor,
            "share.coordinator.state.topic.min.isr": isr,
        }
