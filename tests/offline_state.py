"""The router's state as the router keeps it (compacted tables over memory stores), never connected
to a broker: for unit tests and benchmarks of the pipeline."""

from __future__ import annotations

from liaison.core.settings import KafkaSettings
from liaison.topics import Topics
from services.router.pipeline import BatchOutcome
from services.router.state import RouterState


def offline_state(topics: Topics | None = None) -> RouterState:
    topics = topics or Topics("")
    settings = KafkaSettings(bootstrap_servers="offline.invalid:9092", topic_prefix=topics.prefix)
    return RouterState(settings, routed_topic=topics.routed, consents_topic=topics.consents,
                       casegroups_topic=topics.casegroups)


def commit(state: RouterState, out: BatchOutcome) -> None:
    """What the router applies once a batch's transaction committed."""
    state.routed.put_many_local(out.routed)
    state.consents.put_many_local(out.consents)
    state.casegroups.put_many_local(out.case_groups)
