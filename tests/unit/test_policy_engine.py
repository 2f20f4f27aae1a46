"""The engine as a whole: explain, state, the deploy files end to end."""

from __future__ import annotations

import json
from pathlib import Path

from liaison.directory import Directory
from liaison.policy import MemoryState, load_policy
from liaison.policy import reasons as R
from tests.unit.policy_fixtures import NOW, alert, codes, engine, outcomes, query, reply

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_explain_matches_route_and_lists_the_rules() -> None:
    """explain gives the same result as route, with each rule consulted per recipient."""
    e = engine()
    record = alert(kind="NOTICE", tlp="RED", agencies=["BR-PF"], groups=["EU", "NOPE"], with_biometrics=True)
    state = MemoryState()
    routed = e.route("Alert", record, outbox_owner="FR-PN", now_ms=NOW, state=state)
    explained = e.explain("Alert", record, now_ms=NOW, state=state)
    assert explained.result == routed
    assert [c.rule for c in explained.message_checks] == ["originator-owns-outbox", "originator-known",
                                                          "originator-active", "copy-set-by-bus"]
    by_recipient = {r.recipient: r for r in explained.recipients}
    assert by_recipient["group:NOPE"].via == "addressing"
    de = by_recipient["DE-BKA"]
    assert de.via == "group EU"
    assert de.checks[-1].rule == "tlp"
    assert de.checks[-1].verdict == "DENY"
    assert all(c.verdict == "PASS" for c in de.checks[:-1])
    brazil = by_recipient["BR-PF"]
    assert brazil.checks[-1].reason_code == R.NOTICE_REVIEW
    hub = by_recipient["INT-IPSG"]
    assert hub.via == "review"
    assert hub.decision.reason_code == R.FOR_REVIEW


def test_explain_of_a_rejection() -> None:
    """A rejected message is explained by its failing message-level check."""
    explained = engine().explain("Alert", alert(agencies=["DE-BKA"]), outbox_owner="DE-BKA", now_ms=NOW,
                                 state=MemoryState())
    assert explained.result.rejection is not None
    assert explained.message_checks[-1].verdict == "REJECT"
    assert explained.message_checks[-1].reason_code == R.SPOOFED_ORIGINATOR
    assert explained.recipients == ()


def test_explain_to_dict_is_json() -> None:
    """The explanation serialises to JSON for the CLI."""
    record = query(agencies=["DE-BKA", "XX-NO"])
    explained = engine().explain("Query", record, now_ms=NOW, state=MemoryState())
    data = json.loads(json.dumps(explained.to_dict()))
    assert data["message_type"] == "Query"
    by_recipient = {r["recipient"]: r["outcome"] for r in data["recipients"]}
    assert by_recipient == {"DE-BKA": "DELIVER", "XX-NO": "DENY"}


def test_engine_is_reusable_and_deterministic() -> None:
    """The same input gives the same result, call after call."""
    e = engine()
    record = alert(groups=["EU", "JIT-A"], agencies=["BR-PF"], with_biometrics=True, restricted=["US"])
    first = e.route("Alert", record, outbox_owner="FR-PN", now_ms=NOW, state=MemoryState())
    for _ in range(3):
        assert e.route("Alert", record, outbox_owner="FR-PN", now_ms=NOW, state=MemoryState()) == first


def test_memory_state_observes_routing() -> None:
    """observe() remembers originator, handling codes, deliveries and query kinds; ignores rejections."""
    e = engine()
    state = MemoryState()
    record = query(agencies=["DE-BKA", "IT-PS"], handling_codes=["H2"], kind="HIT_CHECK")
    state.observe("Query", record, e.route("Query", record, outbox_owner="FR-PN", now_ms=NOW, state=state))
    mid = record["envelope"]["message_id"]
    assert state.originator_of(mid) == "FR-PN"
    assert state.delivered_to(mid) == {"DE-BKA"}
    assert state.handling_of(mid) == ("FR-PN", frozenset({"H2"}))
    assert state.query_kind_of(mid) == "HIT_CHECK"
    assert state.handling_of("unknown") is None
    spoofed = query("DE-BKA", agencies=["US-FBI"])
    state.observe("Query", spoofed, e.route("Query", spoofed, outbox_owner="FR-PN", now_ms=NOW, state=state))
    assert state.originator_of(spoofed["envelope"]["message_id"]) is None


def test_demo_scenario_on_the_deploy_files() -> None:
    """The shipped directory and policy give the outcomes the demo relies on."""
    e = load_policy(DEPLOY / "policy.yaml").compile(Directory.from_file(DEPLOY / "directory.yaml"))
    state = MemoryState()
    wanted = alert(kind="DIFFUSION", groups=["EU"], agencies=["US-FBI", "BR-PF", "SG-SPF"],
                   with_biometrics=True, restricted=["PL"])
    result = e.route("Alert", wanted, outbox_owner="FR-PN", now_ms=NOW, state=state)
    assert codes(result)["PL-KGP"] == R.RESTRICTED_BY_ORIGINATOR
    assert codes(result)["BR-PF"] == R.BIOMETRIC_NOT_CLEARED
    assert codes(result)["SG-SPF"] == R.BIOMETRIC_NOT_CLEARED  # cleared for fingerprints only
    prints = alert(agencies=["SG-SPF"], data_categories=["FINGERPRINT"])
    assert codes(e.route("Alert", prints, outbox_owner="FR-PN", now_ms=NOW, state=state)) == {
        "SG-SPF": R.NO_AGREEMENT}
    assert outcomes(result)["DE-BKA"] == "DELIVER"
    assert next(d for d in result.decisions if d.recipient == "DE-BKA").redactions == ()
    state.observe("Alert", wanted, result)
    flag = reply("DE-BKA", wanted["envelope"]["message_id"], outcome="FLAG")
    flagged = e.route("Reply", flag, outbox_owner="DE-BKA", now_ms=NOW, state=state)
    assert outcomes(flagged) == {"FR-PN": "DELIVER"}
    assert flagged.notify_hub == ("INT-IPSG",)
    jit = e.route("Alert", alert(groups=["JIT-ORION"], tlp="AMBER_STRICT"), outbox_owner="FR-PN",
                  now_ms=NOW, state=state)
    assert outcomes(jit) == {"ES-CNP": "DELIVER", "NL-KLPD": "DELIVER"}
