"""The policy file: defaults, every setting, errors, and the shipped deploy/policy.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from liaison.directory import Directory
from liaison.errors import ConfigError
from liaison.policy import REASONS, PolicyConfig, PolicyEngine, compile_policy, load_policy
from liaison.policy import reasons as R
from tests.unit.policy_fixtures import small_directory

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_defaults_follow_the_sources() -> None:
    """An empty policy reviews notices and neutrality, redacts biometrics, keeps audit forever."""
    config = PolicyConfig.from_yaml("")
    assert config == PolicyConfig()
    assert config.notice_review
    assert config.neutrality_review
    assert config.biometrics == "redact"
    assert config.amber_reach == "groups"
    assert config.audit_retention_ms == -1


def test_every_setting() -> None:
    """Each documented setting is read."""
    config = PolicyConfig.from_yaml("""
version: 1
hubs: [EU-EUROPOL]
review: {notices: false, neutrality: false}
tlp: {amber_strict: named, amber: named}
biometrics: {on_missing: deny}
onward_sharing: {unknown_source: deny}
audit: {retention_days: 10}
""")
    assert config == PolicyConfig(hubs=frozenset({"EU-EUROPOL"}), notice_review=False,
                                  neutrality_review=False, amber_strict_reach="named", amber_reach="named",
                                  biometrics="deny", unknown_source="deny", audit_retention_days=10)
    assert config.audit_retention_ms == 10 * 86_400_000


@pytest.mark.parametrize(("text", "message"), [
    ("review: [", "not valid YAML"),
    ("- 1", "must be a mapping"),
    ("version: 2", "version 2 is not supported"),
    ("hubs: INT-IPSG", "hubs must be a list"),
    ("hubs: [int-ipsg]", "not an agency code"),
    ("review: {notice: true}", r"review: unknown setting\(s\) notice"),
    ("review: {notices: maybe}", "review.notices must be true or false"),
    ("review: yes", "review must be a mapping"),
    ("tlp: {amber: broadcast}", "tlp.amber must be named or groups"),
    ("tlp: {red: groups}", "unknown setting"),
    ("biometrics: {on_missing: drop}", "biometrics.on_missing must be redact or deny"),
    ("onward_sharing: {unknown_source: 1}", "must be allow or deny"),
    ("audit: {retention_days: -1}", "retention_days must be a positive"),
    ("audit: {retention_days: true}", "retention_days must be a positive"),
    ("extra: 1", "unknown setting"),
])
def test_errors_name_the_setting(text: str, message: str) -> None:
    """Every mistake is a ConfigError naming the file and the setting."""
    with pytest.raises(ConfigError, match=message) as info:
        PolicyConfig.from_yaml(text, source="policy.yaml")
    assert str(info.value).startswith("policy.yaml: ")


def test_missing_file(tmp_path: Path) -> None:
    """An unreadable policy file is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="cannot read policy file"):
        load_policy(tmp_path / "none.yaml")


def test_deploy_policy_compiles_over_the_deploy_directory() -> None:
    """The shipped policy and directory compile into an engine."""
    config = load_policy(DEPLOY / "policy.yaml")
    assert config.audit_retention_days == 1095
    engine = config.compile(Directory.from_file(DEPLOY / "directory.yaml"))
    assert isinstance(engine, PolicyEngine)
    assert engine.rule_names("Alert")[0] == "recipient-known"
    assert engine.rule_names("Receipt") == ()


def test_compile_policy_takes_a_mapping_or_a_config() -> None:
    """compile_policy accepts the parsed YAML or a PolicyConfig."""
    from_map = compile_policy({"biometrics": {"on_missing": "deny"}}, small_directory())
    from_cfg = compile_policy(PolicyConfig(biometrics="deny"), small_directory())
    assert from_map.config == from_cfg.config
    with pytest.raises(ConfigError):
        compile_policy({"biometrics": {"on_missing": "nope"}}, small_directory())


def test_unknown_policy_hub_is_ignored_at_compile() -> None:
    """A hub the directory does not know (yet) reviews nothing and breaks nothing."""
    engine = compile_policy(PolicyConfig(hubs=frozenset({"EU-EUROPOL"})), small_directory())
    assert engine.rule_names("Reply")


def test_every_reason_code_is_documented() -> None:
    """Each code constant in reasons.py has a one-sentence meaning, and nothing else is listed."""
    constants = {v for k, v in vars(R).items() if k.isupper() and isinstance(v, str)}
    assert constants == set(REASONS)
    assert all(text.endswith(".") for text in REASONS.values())
    assert set(REASONS) >= R.REJECTIONS | R.HOLDS | R.REDACTIONS
