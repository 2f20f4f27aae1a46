"""The sharing policy: a YAML file plus the directory, compiled once, evaluated per recipient.

`load_policy(path).compile(directory)` (or `compile_policy(cfg, directory)`) gives a PolicyEngine;
`engine.route(...)` decides each recipient of one message, `engine.explain(...)` shows why.
"""

from liaison.policy.engine import PolicyEngine, compile_policy
from liaison.policy.model import (
    Check,
    Decision,
    Explanation,
    MemoryState,
    PolicyConfig,
    RecipientExplanation,
    Rejection,
    RoutingResult,
    RoutingState,
    load_policy,
)
from liaison.policy.reasons import REASONS
from liaison.policy.redaction import apply_redactions, paths_for

__all__ = [
    "REASONS",
    "Check",
    "Decision",
    "Explanation",
    "MemoryState",
    "PolicyConfig",
    "PolicyEngine",
    "RecipientExplanation",
    "Rejection",
    "RoutingResult",
    "RoutingState",
    "apply_redactions",
    "compile_policy",
    "load_policy",
    "paths_for",
]
