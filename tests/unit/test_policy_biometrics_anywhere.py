"""Biometric data wherever it sits: subject biometrics, identifiers of a biometric scheme, criteria."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liaison.codec import parse_wire_schema
from liaison.directory import Agency, Agreement, Directory
from liaison.policy import (
    MemoryState,
    PolicyConfig,
    PolicyEngine,
    RoutingResult,
    apply_redactions,
    load_policy,
)
from liaison.policy import reasons as R
from liaison.policy.redaction import (
    BIOMETRIC_STEMS,
    BIOMETRIC_WORDS,
    FIELD_CATEGORY,
    biometric_categories,
    categories_in,
    locate,
    paths_for,
)
from liaison.schemas import load_catalog
from liaison.sdk import envelope as sdk_envelope
from liaison.sdk import query as sdk_query
from liaison.sdk.builders import subject as sdk_subject
from tests.avro_strategies import records
from tests.unit.policy_fixtures import ALL_BIO, NOW, alert, engine, query, reply, routed
from tests.unit.test_policy_properties import SETTINGS, directories, policies

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def route(message_type: str, record: dict[str, Any], *, state: MemoryState | None = None,
          **policy: Any) -> RoutingResult:
    return engine(**policy).route(message_type, record, outbox_owner=record["envelope"]["originator"],
                                  now_ms=NOW, state=state or MemoryState())


def decision(result: RoutingResult, recipient: str) -> Any:
    return next(d for d in result.decisions if d.recipient == recipient)


def ident(scheme: str, value: str) -> dict[str, Any]:
    return {"scheme": scheme, "value": value, "issuer": None}


# -- the vocabulary -------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "expected"), [
    ("dna_profile_ref", {"DNA"}), ("DNA", {"DNA"}), ("dnaProfile", {"DNA"}), ("CODIS-ID", {"DNA"}),
    ("FINGERPRINT", {"FINGERPRINT"}), ("fingerprintRef", {"FINGERPRINT"}), ("AFIS", {"FINGERPRINT"}),
    ("afis_id", {"FINGERPRINT"}), ("latent prints", {"FINGERPRINT"}), ("TENPRINTS", {"FINGERPRINT"}),
    ("palm", {"FINGERPRINT"}), ("EURODAC", {"FINGERPRINT"}), ("dactyloscopic_data", {"FINGERPRINT"}),
    ("FACIAL_IMAGE", {"FACIAL_IMAGE"}), ("FACE", {"FACIAL_IMAGE"}), ("faceImage", {"FACIAL_IMAGE"}),
    ("mugshot_url", {"FACIAL_IMAGE"}), ("IRIS", {"BIOMETRIC"}), ("iris-code", {"BIOMETRIC"}),
    ("BIOMETRIC_ID", {"BIOMETRIC"}), ("voiceprint", {"BIOMETRIC"}),
    ("dna_or_fingerprint", {"DNA", "FINGERPRINT"}),
])
def test_biometric_names(name: str, expected: set[str]) -> None:
    """Schemes and keys that name a biometric kind, in any case or separator, give its category."""
    assert biometric_categories(name) == expected


@pytest.mark.parametrize("name", ["plate", "PASSPORT", "VIN", "IMEI", "ID_CARD", "facebook", "IRISH_ID",
                                  "surface", "palmer", "", "printer", "fin", "x" * 200])
def test_other_names_are_not_biometric(name: str) -> None:
    """Ordinary identifier schemes and criteria keys are not caught by a biometric word's letters."""
    assert biometric_categories(name) == frozenset()


def test_long_names_are_classified_without_filling_the_cache() -> None:
    """A name longer than the cached size is still read whole."""
    assert biometric_categories("x_" * 100 + "dna") == {"DNA"}
    assert biometric_categories(None) == frozenset()


def test_locate_finds_every_place() -> None:
    """Subject biometrics, identifiers and criteria each report their categories."""
    record = query(with_biometrics=True)
    record["subject"]["identifiers"].append(ident("AFIS", "A-1"))
    record["criteria"] = {"dna_profile_ref": "D-1", "plate": "AB-123"}
    assert locate(record) == {("subject.biometrics", "DNA"), ("subject.biometrics", "FINGERPRINT"),
                              ("subject.biometrics", "FACIAL_IMAGE"), ("subject.identifiers", "FINGERPRINT"),
                              ("criteria", "DNA")}
    assert categories_in(record) == {"DNA", "FINGERPRINT", "FACIAL_IMAGE"}
    assert locate(query()) == frozenset()


def test_selector_paths_only_where_the_data_is() -> None:
    """A place gets a path only for the categories it holds; BIOMETRIC takes every entry there."""
    found = frozenset({("criteria", "DNA"), ("subject.identifiers", "FINGERPRINT")})
    assert paths_for(frozenset({"DNA"}), found) == ("criteria[DNA]", "subject.biometrics.dna_profile")
    assert paths_for(frozenset({"FACIAL_IMAGE"}), found) == ("subject.biometrics.facial_image",)
    assert paths_for(frozenset({"BIOMETRIC"}), found) == ("criteria[BIOMETRIC]", "subject.biometrics",
                                                          "subject.identifiers[BIOMETRIC]")


def test_selectors_remove_only_their_entries_and_never_mutate() -> None:
    """criteria[DNA] drops the DNA keys and keeps the rest; the input is unchanged."""
    record = query()
    record["criteria"] = {"dna_profile_ref": "D-1", "fingerprint_ref": "F-1", "plate": "AB-123"}
    record["subject"]["identifiers"] += [ident("AFIS", "A-1"), ident("IRIS", "I-1")]
    before = copy.deepcopy(record)
    out = apply_redactions(record, ("criteria[DNA]", "subject.identifiers[FINGERPRINT]"))
    assert record == before
    assert out["criteria"] == {"fingerprint_ref": "F-1", "plate": "AB-123"}
    assert [i["scheme"] for i in out["subject"]["identifiers"]] == ["PASSPORT", "IRIS"]
    assert out["envelope"]["redactions"] == ["criteria[DNA]", "subject.identifiers[FINGERPRINT]"]
    every = apply_redactions(record, ("criteria[BIOMETRIC]", "subject.identifiers[BIOMETRIC]"))
    assert every["criteria"] == {"plate": "AB-123"}
    assert [i["scheme"] for i in every["subject"]["identifiers"]] == ["PASSPORT"]
    assert apply_redactions(alert(), ("criteria[DNA]",))["subject"] == alert()["subject"]


# -- the rule, in every place ----------------------------------------------------------------------
def test_biometric_criteria_are_removed_for_an_uncleared_recipient() -> None:
    """A DNA key in criteria, declared nowhere: removed for BR-PF, kept for DE-BKA."""
    record = query(agencies=["BR-PF", "DE-BKA"])
    record["criteria"] = {"dna_profile_ref": "DNA-SECRET", "plate": "AB-123"}
    result = route("Query", record)
    brazil = decision(result, "BR-PF")
    assert (brazil.outcome, brazil.reason_code) == ("DELIVER", R.BIOMETRIC_NOT_CLEARED)
    assert brazil.redactions == ("criteria[DNA]", "subject.biometrics.dna_profile")
    assert apply_redactions(record, brazil.redactions)["criteria"] == {"plate": "AB-123"}
    assert decision(result, "DE-BKA").redactions == ()


def test_biometric_identifiers_are_removed_in_alerts_and_replies() -> None:
    """An AFIS identifier in an alert's subject, and in a reply's subject, follows the rule."""
    record = alert(agencies=["BR-PF", "US-FBI"])
    record["subject"]["identifiers"].append(ident("AFIS", "AFIS-SECRET"))
    result = route("Alert", record)
    brazil = decision(result, "BR-PF")
    assert brazil.redactions == ("subject.biometrics.fingerprint_ref", "subject.biometrics.fingerprints",
                                 "subject.identifiers[FINGERPRINT]")
    assert "AFIS-SECRET" not in repr(apply_redactions(record, brazil.redactions))
    assert decision(result, "US-FBI").redactions == ()  # cleared, and FR-US covers fingerprints
    state = MemoryState()
    asked = routed(state, "BR-PF", ["FR-PN"], query_kind="INFORMATION")
    answer = reply("FR-PN", asked, with_subject=True)
    answer["subject"]["identifiers"].append(ident("FACIAL_IMAGE", "IMG-SECRET"))
    d = decision(route("Reply", answer, state=state), "BR-PF")
    assert d.redactions == ("subject.biometrics.facial_image", "subject.identifiers[FACIAL_IMAGE]")
    assert "IMG-SECRET" not in repr(apply_redactions(answer, d.redactions))


def test_a_generic_biometric_entry_needs_the_biometric_clearance() -> None:
    """An IRIS identifier is of the BIOMETRIC category: without it, every biometric entry goes."""
    directory = Directory(
        agencies=[Agency("FR-PN", "x", clearances=ALL_BIO),
                  Agency("DE-BKA", "y", clearances=frozenset({"DNA", "FINGERPRINT", "FACIAL_IMAGE"}))],
        agreements=[Agreement("ALL", frozenset({"FR", "DE"}), ALL_BIO)])
    record = query(agencies=["DE-BKA"])
    record["subject"]["identifiers"] += [ident("IRIS", "IRIS-SECRET"), ident("AFIS", "AFIS-X")]
    record["criteria"] = {"dna": "DNA-X"}
    d = engine(directory).route("Query", record, outbox_owner="FR-PN", now_ms=NOW,
                                state=MemoryState()).decisions[0]
    assert d.redactions == ("criteria[BIOMETRIC]", "subject.biometrics", "subject.identifiers[BIOMETRIC]")
    out = apply_redactions(record, d.redactions)
    assert not any(tag in repr(out) for tag in ("IRIS-SECRET", "AFIS-X", "DNA-X"))


def test_deny_mode_denies_for_biometrics_anywhere() -> None:
    """With biometrics: deny, a biometric criteria key alone keeps the query from BR-PF."""
    record = query(agencies=["BR-PF", "DE-BKA"])
    record["criteria"] = {"latent_print": "L-1"}
    result = route("Query", record, biometrics="deny")
    assert (decision(result, "BR-PF").outcome, decision(result, "BR-PF").reason_code) == (
        "DENY", R.BIOMETRIC_NOT_CLEARED)
    assert decision(result, "DE-BKA").outcome == "DELIVER"


def test_redacted_records_still_fit_their_schemas() -> None:
    """Entries removed from identifiers and criteria leave valid records for the router to encode."""
    catalog = load_catalog()
    q = query(with_biometrics=True)
    q["criteria"] = {"dna": "D", "plate": "P"}
    q["subject"]["identifiers"].append(ident("AFIS", "A"))
    a = alert(with_biometrics=True)
    a["subject"]["identifiers"].append(ident("DNA", "D"))
    paths = paths_for(frozenset({"BIOMETRIC"}), locate(q) | locate(a))
    for name, record in (("Query", q), ("Alert", a)):
        schema = parse_wire_schema(catalog.standalone(name))
        assert fastavro.validate(apply_redactions(record, paths), schema)


def test_the_demos_fingerprint_hit_check_keeps_its_outcomes() -> None:
    """The demo's HIT_CHECK (fingerprints in subject.biometrics) on the deploy files: Germany gets
    it whole, the United States and Brazil without the prints; in criteria, the same."""
    e = load_policy(DEPLOY / "policy.yaml").compile(Directory.from_file(DEPLOY / "directory.yaml"))
    biometrics = {"fingerprint_ref": "FR-AFIS-2026-55120", "fingerprints": b"\x01ANSI-NIST"}
    for subj, criteria in ((sdk_subject("latent prints", kind="UNIDENTIFIED_PERSON", biometrics=biometrics),
                            None),
                           (None, {"fingerprint_ref": "FR-AFIS-2026-55120"})):
        env = sdk_envelope("FR-PN", to=["DE-BKA", "US-FBI", "BR-PF"], categories=["FINGERPRINT"])
        record = sdk_query(env, "Do these latent fingerprints match a record of yours?", kind="HIT_CHECK",
                           subj=subj, criteria=criteria)
        result = e.route("Query", record, outbox_owner="FR-PN", now_ms=NOW, state=MemoryState())
        by = {d.recipient: d for d in result.decisions}
        assert (by["DE-BKA"].outcome, by["DE-BKA"].redactions) == ("DELIVER", ())
        assert by["US-FBI"].reason_code == R.NO_AGREEMENT
        assert by["BR-PF"].reason_code == R.BIOMETRIC_NOT_CLEARED
        for code in ("US-FBI", "BR-PF"):
            assert by[code].outcome == "DELIVER"
            assert by[code].public_code == R.FIELDS_REMOVED
            assert "FR-AFIS-2026-55120" not in repr(apply_redactions(record, by[code].redactions))


# -- the property ----------------------------------------------------------------------------------
_CATALOG = load_catalog()
SUBJECTS = records(_CATALOG.standalone("Subject"))
_MARKERS = sorted({(w, c, False) for w, c in BIOMETRIC_WORDS.items()}
                  | {(s, c, True) for s, c in BIOMETRIC_STEMS.items()})
_AFFIXES = ("ref", "id", "profile", "record", "left", "hash", "no")


@st.composite
def biometric_names(draw: st.DrawFn) -> tuple[str, str]:
    """(name, category): a vocabulary word or stem in any case, with separators, camelCase, affixes."""
    marker, category, stem = draw(st.sampled_from(_MARKERS))
    core = marker + (draw(st.sampled_from(["", "REF", "DATA"])) if stem else draw(st.sampled_from(["", "S"])))
    words = [*draw(st.lists(st.sampled_from(_AFFIXES), max_size=1)), core,
             *draw(st.lists(st.sampled_from(_AFFIXES), max_size=2))]
    style = draw(st.sampled_from(["upper", "lower", "camel"]))
    if style == "camel":
        name = words[0].lower() + "".join(w.capitalize() for w in words[1:])
    else:
        name = draw(st.sampled_from(["_", "-", " ", "."])).join(words)
        name = name.upper() if style == "upper" else name.lower()
    return name, category


Planted = list[tuple[str, str]]  # (category, tag)


@st.composite
def with_biometrics(draw: st.DrawFn, directory: Directory
                    ) -> tuple[str, dict[str, Any], MemoryState, Planted]:
    """A record of any type from any originator, with biometric data planted in every possible place."""
    codes = sorted(directory.agencies)
    active = [c for c in codes if directory.agencies[c].active]
    originator = draw(st.sampled_from(active or codes))  # a suspended one is refused whole: see below
    others = [c for c in codes if c != originator]
    message_type = draw(st.sampled_from(["Alert", "Query", "Reply"]))
    env: dict[str, Any] = {
        "agencies": [] if message_type == "Reply" else draw(st.lists(st.sampled_from(others), min_size=1,
                                                                     max_size=4)),
        "tlp": draw(st.sampled_from(["AMBER", "GREEN", "CLEAR"])),
        "data_categories": draw(st.lists(st.sampled_from([*sorted(ALL_BIO), "PERSONAL"]), max_size=2)),
    }
    state = MemoryState()
    if message_type == "Reply":
        asker = draw(st.sampled_from(others))
        record = reply(originator, routed(state, asker, [originator], query_kind="INFORMATION"), **env)
    elif message_type == "Query":
        record = query(originator, **env)
        record["criteria"] = draw(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=2))
    else:
        record = alert(originator, **env)
    record["subject"] = subj = draw(SUBJECTS)
    planted: Planted = []
    for i, (name, category) in enumerate(draw(st.lists(biometric_names(), min_size=1, max_size=4))):
        tag = f"ZQ{i}PLANTED"
        places = ["identifiers", "criteria"] if message_type == "Query" else ["identifiers"]
        place = draw(st.sampled_from(places))
        if place == "criteria":
            record["criteria"][name] = tag
        else:
            subj["identifiers"] = [*subj["identifiers"], {"scheme": name, "value": tag, "issuer": None}]
        planted.append((category, tag))
    for field in draw(st.sets(st.sampled_from(sorted(FIELD_CATEGORY)))):
        tag = f"ZQB{field}PLANTED"
        subj["biometrics"] = {**(subj["biometrics"] or dict.fromkeys(FIELD_CATEGORY)),
                              field: tag.encode() if field in ("fingerprints", "facial_image") else tag}
        planted.append((FIELD_CATEGORY[field], tag))
    return message_type, record, state, planted


@settings(SETTINGS, max_examples=200)
@given(directories().flatmap(lambda d: st.tuples(st.just(d), policies, with_biometrics(d))))
def test_no_recipient_gets_biometric_data_it_may_not_have(
        case: tuple[Directory, PolicyConfig, tuple[str, dict[str, Any], MemoryState, Planted]]) -> None:
    """Wherever biometric data sits, a recipient without the clearance or an agreement covering its
    category never finds any of it in its copy (or the message is refused whole)."""
    directory, config, (message_type, record, state, planted) = case
    originator = record["envelope"]["originator"]
    result = PolicyEngine(config, directory).route(message_type, record, outbox_owner=originator,
                                                   now_ms=NOW, state=state)
    if result.rejection is not None:
        return
    for d in result.decisions:
        if d.outcome != "DELIVER":
            continue
        agency = directory.agencies[d.recipient]
        copy_seen = repr(apply_redactions(record, d.redactions))
        for category, tag in planted:
            if not (category in agency.clearances
                    and directory.agreement_covers(originator, d.recipient, category, NOW)):
                assert tag not in copy_seen, (d.recipient, category, tag, d.redactions)
