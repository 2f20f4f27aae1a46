"""Properties over random directories, policies and messages: what must hold whatever the input."""

from __future__ import annotations

import copy
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liaison.directory import BIOMETRIC_CATEGORIES, Agency, Agreement, Directory, Group, country_of
from liaison.policy import MemoryState, PolicyConfig, PolicyEngine, RoutingResult, apply_redactions, paths_for
from liaison.policy.redaction import categories_in
from tests.unit.policy_fixtures import NOW, alert, biometrics, query, reply, routed

COUNTRIES = ("FR", "DE", "US", "BR", "SG")
CODES = (*(f"{c}-{n}" for c in COUNTRIES for n in ("A", "B")), "INT-HUB")
STANDING = ("G1", "G2")
GROUPS = (*STANDING, "CASE-LIVE", "CASE-OLD", "NO-SUCH-GROUP")
BIO = sorted(BIOMETRIC_CATEGORIES)
Case = tuple[Directory, PolicyConfig, str, dict[str, Any]]
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def directories(draw: st.DrawFn) -> Directory:
    codes = draw(st.lists(st.sampled_from(CODES), min_size=2, max_size=len(CODES), unique=True))
    agencies = [Agency(code, code, groups=frozenset(draw(st.sets(st.sampled_from(STANDING)))),
                       hub=draw(st.booleans()) if code == "INT-HUB" else draw(st.integers(0, 9)) == 0,
                       status=draw(st.sampled_from(["ACTIVE", "ACTIVE", "ACTIVE", "SUSPENDED"])),
                       clearances=frozenset(draw(st.sets(st.sampled_from(BIO)))))
                for code in codes]
    groups = [Group(name) for name in STANDING]
    for name, expires in (("CASE-LIVE", NOW + 1000), ("CASE-OLD", NOW - 1)):
        members = draw(st.sets(st.sampled_from(codes), min_size=1))
        groups.append(Group(name, "CASE", members=frozenset(members), expires_at=expires))
    agreements = []
    for i in range(draw(st.integers(0, 3))):
        parties = draw(st.sets(st.sampled_from(codes + list(COUNTRIES)), min_size=2, max_size=5))
        agreements.append(Agreement(
            f"AG-{i}", frozenset(parties), frozenset(draw(st.sets(st.sampled_from(BIO), min_size=1))),
            expires_at=draw(st.sampled_from([None, NOW - 1, NOW + 1000])),
            centre=draw(st.sampled_from([None, *sorted(parties)]))))
    return Directory(agencies, groups, agreements)


policies = st.builds(
    PolicyConfig,
    hubs=st.sets(st.sampled_from(CODES), max_size=1).map(frozenset),
    notice_review=st.booleans(), neutrality_review=st.booleans(),
    amber_strict_reach=st.sampled_from(["named", "groups"]), amber_reach=st.sampled_from(["named", "groups"]),
    biometrics=st.sampled_from(["redact", "deny"]), unknown_source=st.sampled_from(["allow", "deny"]),
)


@st.composite
def messages(draw: st.DrawFn, directory: Directory) -> tuple[str, dict[str, Any]]:
    originator = draw(st.sampled_from(sorted(directory.agencies)))
    env = {
        "agencies": draw(st.lists(st.sampled_from([*CODES, "XX-NOPE"]), max_size=4)),
        "groups": draw(st.lists(st.sampled_from(GROUPS), max_size=3)),
        "broadcast": draw(st.booleans()),
        "tlp": draw(st.sampled_from(["RED", "AMBER_STRICT", "AMBER", "GREEN", "CLEAR"])),
        "restricted": draw(st.lists(st.sampled_from([*CODES, *COUNTRIES]), max_size=3)),
        "data_categories": draw(st.lists(st.sampled_from([*BIO, "PERSONAL", "VEHICLE"]), max_size=3)),
        "expires_at": draw(st.sampled_from([None, None, NOW, NOW + 1])),
    }
    bio = draw(st.booleans())
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["NOTICE", "DIFFUSION"]))
        tags = draw(st.lists(st.sampled_from(["POLITICAL", "RACIAL"]), max_size=1))
        return "Alert", alert(originator, kind=kind, with_biometrics=bio, sensitivity=tags, **env)
    return "Query", query(originator, with_biometrics=bio, **env)


def scenario() -> st.SearchStrategy[Case]:
    return directories().flatmap(lambda d: st.tuples(st.just(d), policies, messages(d)).map(
        lambda t: (t[0], t[1], t[2][0], t[2][1])))


def run(directory: Directory, config: PolicyConfig, message_type: str, record: dict[str, Any]
        ) -> tuple[PolicyEngine, RoutingResult]:
    e = PolicyEngine(config, directory)
    owner = record["envelope"]["originator"]
    return e, e.route(message_type, record, outbox_owner=owner, now_ms=NOW, state=MemoryState())


def must_not_receive(directory: Directory, config: PolicyConfig, message_type: str,
                     record: dict[str, Any]) -> set[str]:
    """Agencies that some deny rule covers, worked out here independently of the engine."""
    env = record["envelope"]
    addressing = env["addressing"]
    named = set(addressing["agencies"])
    in_groups = {a for g in addressing["groups"] for a in directory.members_of(g, NOW)}
    hubs = set(directory.hub_agencies()) | config.hubs
    held = message_type == "Alert" and (
        (config.neutrality_review and record["sensitivity"])
        or (config.notice_review and record["kind"] == "NOTICE" and env["originator"] not in hubs))
    reviewers = hubs if held else set()
    restricted = {r.upper() for r in env["restricted"]}
    expired = env["expires_at"] is not None and env["expires_at"] <= NOW
    needs = BIOMETRIC_CATEGORIES.intersection(env["data_categories"]) | categories_in(record)
    limits = {"RED": "named", "AMBER_STRICT": config.amber_strict_reach, "AMBER": config.amber_reach,
              "GREEN": "groups", "CLEAR": "broadcast"}
    order = ["named", "groups", "broadcast"]
    denied = set()
    for code in CODES:
        agency = directory.agency(code)
        reach = ("named" if code in named or code in reviewers
                 else "groups" if code in in_groups else "broadcast")
        if (agency is None or not agency.active or expired or code in restricted
                or country_of(code) in restricted
                or order.index(reach) > order.index(limits[env["tlp"]])
                or (held and code not in reviewers)
                or (config.biometrics == "deny" and not all(
                    c in agency.clearances and directory.agreement_covers(env["originator"], code, c, NOW)
                    for c in needs))):
            denied.add(code)
    return denied


@SETTINGS
@given(scenario())
def test_denied_recipients_never_get_the_message(case: Case) -> None:
    """(a) No agency that a deny or hold rule covers is in the DELIVER set."""
    directory, config, message_type, record = case
    _, result = run(directory, config, message_type, record)
    if result.rejection is not None:  # a suspended originator: nobody gets anything
        assert result.decisions == ()
        assert not directory.agencies[record["envelope"]["originator"]].active
        return
    assert not set(result.delivered) & must_not_receive(directory, config, message_type, record)


@SETTINGS
@given(scenario())
def test_sender_never_receives_its_own_message(case: Case) -> None:
    """(b) The originator has no decision about its own message, and hubs told are not the sender."""
    directory, config, message_type, record = case
    _, result = run(directory, config, message_type, record)
    sender = record["envelope"]["originator"]
    assert sender not in {d.recipient for d in result.decisions}
    assert sender not in result.notify_hub


@SETTINGS
@given(scenario())
def test_delivered_copies_hold_no_uncovered_biometrics(case: Case) -> None:
    """Every delivered copy, after its redactions, holds only biometric data its recipient may have."""
    directory, config, message_type, record = case
    _, result = run(directory, config, message_type, record)
    originator = record["envelope"]["originator"]
    for d in result.decisions:
        if d.outcome != "DELIVER":
            continue
        agency = directory.agency(d.recipient)
        assert agency is not None
        left = categories_in(apply_redactions(record, d.redactions))
        for cat in left:
            assert cat in agency.clearances
            assert directory.agreement_covers(originator, d.recipient, cat, NOW)


@SETTINGS
@given(scenario(), st.randoms(use_true_random=False))
def test_result_is_deterministic(case: Case, rnd: random.Random) -> None:
    """(d) Same input, same result: again, with shuffled addressing, and through explain."""
    directory, config, message_type, record = case
    e, first = run(directory, config, message_type, record)
    shuffled = copy.deepcopy(record)
    for key in ("agencies", "groups"):
        rnd.shuffle(shuffled["envelope"]["addressing"][key])
    rnd.shuffle(shuffled["envelope"]["restricted"])
    owner = record["envelope"]["originator"]
    assert e.route(message_type, record, outbox_owner=owner, now_ms=NOW, state=MemoryState()) == first
    assert e.route(message_type, shuffled, outbox_owner=owner, now_ms=NOW, state=MemoryState()) == first
    assert e.explain(message_type, record, now_ms=NOW, state=MemoryState()).result == first


@SETTINGS
@given(directories(), st.data())
def test_replies_reach_only_the_asker(directory: Directory, data: st.DataObject) -> None:
    """Whatever a reply's addressing, only the asker can be in the DELIVER set."""
    codes = sorted(directory.agencies)
    asker, replier = data.draw(st.sampled_from(codes)), data.draw(st.sampled_from(codes))
    state = MemoryState()
    asked = routed(state, asker, data.draw(st.sets(st.sampled_from(codes))),
                   query_kind=data.draw(st.sampled_from([None, "INFORMATION", "HIT_CHECK"])))
    record = reply(replier, asked, outcome=data.draw(st.sampled_from(["HIT", "NO_HIT"])),
                   agencies=data.draw(st.lists(st.sampled_from(codes))),
                   groups=data.draw(st.lists(st.sampled_from(GROUPS))), broadcast=data.draw(st.booleans()))
    result = PolicyEngine(PolicyConfig(), directory).route("Reply", record, outbox_owner=replier, now_ms=NOW,
                                                           state=state)
    assert set(result.delivered) <= {asker} - {replier}


@SETTINGS
@given(st.sets(st.sampled_from(BIO)), st.lists(st.sampled_from(
    ["subject.biometrics", "subject.biometrics.dna_profile", "subject.identifiers", "envelope.case_id",
     "subject.person.family_name", "x.y"]), max_size=4), st.sampled_from(["Alert", "Query", "Reply"]))
def test_redaction_removes_protected_values_and_never_mutates(
        categories: set[str], extra: list[str], message_type: str) -> None:
    """(c) Redacting the biometric paths leaves no biometric value anywhere; the input never changes."""
    if message_type == "Alert":
        record = alert(with_biometrics=True)
    elif message_type == "Query":
        record = query(with_biometrics=True)
    else:
        record = reply("FR-PN", "q", with_subject=True)
        record["subject"]["biometrics"] = biometrics()
    before = copy.deepcopy(record)
    paths = paths_for(frozenset(BIOMETRIC_CATEGORIES)) + tuple(extra)
    out = apply_redactions(record, paths)
    assert record == before
    assert not any(marker in repr(out) for marker in ("AFIS-X", "FP-X", "DNA-X", "IMG-X"))
    some = apply_redactions(record, paths_for(frozenset(categories)) + tuple(extra))
    assert record == before
    assert not categories_in(some) & categories
