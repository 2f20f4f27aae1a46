"""Field redaction: the paths per category, and a new record with them emptied."""

from __future__ import annotations

import copy

import fastavro

from liaison.codec import parse_wire_schema
from liaison.policy import apply_redactions, paths_for
from liaison.policy.redaction import categories_in
from liaison.schemas import load_catalog
from tests.unit.policy_fixtures import ALL_BIO, alert, query, reply


def test_paths_per_category() -> None:
    """Each biometric category maps to its fields; all of them collapse to the whole record."""
    assert paths_for(frozenset({"DNA"})) == ("subject.biometrics.dna_profile",)
    assert paths_for(frozenset({"FINGERPRINT"})) == ("subject.biometrics.fingerprint_ref",
                                                     "subject.biometrics.fingerprints")
    assert paths_for(frozenset({"DNA", "FINGERPRINT", "FACIAL_IMAGE"})) == ("subject.biometrics",)
    assert paths_for(frozenset({"BIOMETRIC", "DNA"})) == ("subject.biometrics",)
    assert paths_for(frozenset({"PERSONAL"})) == ()


def test_categories_found_in_the_record() -> None:
    """Values present in subject.biometrics name their categories; empty ones do not."""
    record = alert(with_biometrics=True)
    assert categories_in(record) == {"DNA", "FINGERPRINT", "FACIAL_IMAGE"}
    record["subject"]["biometrics"]["dna_profile"] = None
    assert categories_in(record) == {"FINGERPRINT", "FACIAL_IMAGE"}
    assert categories_in(alert()) == frozenset()
    assert categories_in(reply("FR-PN", "x")) == frozenset()


def test_redaction_empties_the_fields_and_lists_them() -> None:
    """The paths are nulled and recorded in envelope.redactions."""
    record = alert(with_biometrics=True)
    out = apply_redactions(record, ("subject.biometrics",))
    assert out["subject"]["biometrics"] is None
    assert out["envelope"]["redactions"] == ["subject.biometrics"]
    assert out["subject"]["person"] == record["subject"]["person"]


def test_redaction_never_mutates_the_input() -> None:
    """The input record is unchanged, down to nested dicts."""
    record = alert(with_biometrics=True)
    before = copy.deepcopy(record)
    apply_redactions(record, paths_for(frozenset({"DNA"})))
    apply_redactions(record, ("subject.biometrics", "subject.identifiers"))
    assert record == before


def test_partial_redaction_keeps_the_rest() -> None:
    """Removing DNA leaves fingerprints and face in place."""
    out = apply_redactions(alert(with_biometrics=True), paths_for(frozenset({"DNA"})))
    bio = out["subject"]["biometrics"]
    assert bio["dna_profile"] is None
    assert bio["fingerprint_ref"] == "AFIS-X"


def test_lists_become_empty_and_missing_paths_are_harmless() -> None:
    """A list field becomes []; a path through null or an absent key changes nothing but is listed."""
    out = apply_redactions(alert(), ("subject.identifiers", "subject.biometrics.dna_profile", "nope.x"))
    assert out["subject"]["identifiers"] == []
    assert out["subject"]["biometrics"] is None
    assert "nope" not in out
    assert out["envelope"]["redactions"] == ["subject.identifiers", "subject.biometrics.dna_profile",
                                             "nope.x"]


def test_existing_redactions_are_kept_once() -> None:
    """Redacting twice lists each path once."""
    once = apply_redactions(alert(with_biometrics=True), ("subject.biometrics",))
    twice = apply_redactions(once, ("subject.biometrics",))
    assert twice["envelope"]["redactions"] == ["subject.biometrics"]


def test_redacted_records_still_fit_their_schemas() -> None:
    """What the router re-encodes after redaction is a valid Alert, Query or Reply."""
    catalog = load_catalog()
    every = (*paths_for(ALL_BIO), "subject.identifiers")
    samples = {"Alert": alert(with_biometrics=True), "Query": query(with_biometrics=True),
               "Reply": reply("FR-PN", "00000000-0000-0000-0000-000000000001", with_subject=True)}
    for name, record in samples.items():
        schema = parse_wire_schema(catalog.standalone(name))
        assert fastavro.validate(record, schema)
        assert fastavro.validate(apply_redactions(record, every), schema)
        assert fastavro.validate(apply_redactions(record, paths_for(frozenset({"DNA"}))), schema)
