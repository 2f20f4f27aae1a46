"""The registry's topic folded into memory: our records, Confluent's, and unreadable ones (no broker)."""

from __future__ import annotations

import json

import pytest

from liaison.errors import DecodeError
from services.registry.compat import CompatibilityLevel, parse_schema
from services.registry.state import (
    RegistryState,
    SubjectVersion,
    config_record,
    schema_record,
    schema_tombstone,
)

A = parse_schema('{"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"}]}')
B = parse_schema('{"type": "record", "name": "B", "fields": [{"name": "y", "type": "int"}]}')


def folded(*records: tuple[bytes, bytes | None]) -> RegistryState:
    state = RegistryState()
    for key, value in records:
        state.apply(key, value)
    return state


def test_registered_versions_are_served_by_subject_and_id() -> None:
    """One schema under two subjects: one id, both uses listed, canonical lookup finds it."""
    state = folded(schema_record(SubjectVersion("s", 1, 7), A), schema_record(SubjectVersion("t", 1, 7), A),
                   schema_record(SubjectVersion("s", 2, 8), B))
    assert state.subjects() == ["s", "t"]
    assert [(v.version, v.schema_id) for v in state.versions("s")] == [(1, 7), (2, 8)]
    assert state.id_of(parse_schema(json.dumps(json.loads(A.text), indent=2))) == 7
    assert [(u.subject, u.version) for u in state.uses(7)] == [("s", 1), ("t", 1)]
    assert (state.max_id, state.schema_count) == (8, 2)
    assert (state.next_version("s"), state.next_version("new")) == (3, 1)


def test_keys_are_stable_bytes_so_compaction_keeps_the_last() -> None:
    """The same logical key is always the same bytes, whatever the value."""
    live = schema_record(SubjectVersion("s", 1, 7), A)
    deleted = schema_record(SubjectVersion("s", 1, 7, deleted=True), A)
    assert live[0] == deleted[0] == schema_tombstone("s", 1)[0]
    assert json.loads(live[0]) == {"keytype": "SCHEMA", "subject": "s", "version": 1, "magic": 1}
    assert config_record(None, CompatibilityLevel.FULL)[0] == config_record(None, None)[0]


def test_soft_delete_hides_hard_delete_forgets_ids_are_never_reused() -> None:
    """Soft-deleted versions keep their schema; a tombstone drops it, but max_id remembers it."""
    state = folded(schema_record(SubjectVersion("s", 1, 1), A), schema_record(SubjectVersion("s", 2, 2), B),
                   schema_record(SubjectVersion("s", 2, 2, deleted=True), B))
    assert [v.version for v in state.versions("s")] == [1]
    assert [v.version for v in state.versions("s", deleted=True)] == [1, 2]
    assert state.id_of(B) == 2
    assert state.next_version("s") == 3
    state.apply(*schema_tombstone("s", 2))
    assert state.schema(2) is None
    assert state.id_of(B) is None
    assert state.uses(2, deleted=True) == []
    assert state.max_id == 2
    state.apply(*schema_tombstone("s", 1))
    assert state.subjects(deleted=True) == []
    assert state.next_version("s") == 1


def test_levels_fall_back_subject_then_global_then_default() -> None:
    """A subject's level wins over the global one, which wins over the configured default."""
    state = RegistryState(default_level=CompatibilityLevel.FULL)
    assert state.level_for("s") is CompatibilityLevel.FULL
    state.apply(*config_record(None, CompatibilityLevel.NONE))
    state.apply(*config_record("s", CompatibilityLevel.FORWARD))
    assert state.level_for("s") is CompatibilityLevel.FORWARD
    assert state.level_for("t") is CompatibilityLevel.NONE
    state.apply(*config_record("s", None))
    state.apply(*config_record(None, None))
    assert state.level_for("s") is CompatibilityLevel.FULL


def test_records_written_by_confluent_are_understood() -> None:
    """Confluent's global config, DELETE_SUBJECT and NOOP records, in its own field order."""
    state = folded(schema_record(SubjectVersion("s", 1, 1), A), schema_record(SubjectVersion("s", 2, 2), B))
    state.apply(b'{"keytype":"CONFIG","magic":0}', b'{"compatibilityLevel":"FORWARD_TRANSITIVE"}')
    state.apply(b'{"keytype":"DELETE_SUBJECT","subject":"s","magic":0}', b'{"subject":"s","version":1}')
    state.apply(b'{"keytype":"NOOP","magic":0}', None)
    assert state.effective_global_level() is CompatibilityLevel.FORWARD_TRANSITIVE
    assert [v.version for v in state.versions("s")] == [2]


@pytest.mark.parametrize(("key", "value"), [
    (b"not json", b"{}"),
    (b"[1]", b"{}"),
    (b'{"keytype":"MYSTERY","magic":0}', b"{}"),
    (b'{"keytype":"SCHEMA","subject":"s","magic":1}', b'{"id":1,"schema":"\\"int\\""}'),
    (b'{"keytype":"SCHEMA","subject":"s","version":1,"magic":1}', b'{"schema":"\\"int\\""}'),
    (b'{"keytype":"SCHEMA","subject":"s","version":1,"magic":1}', b'{"id":1,"schema":"{nope"}'),
    (b'{"keytype":"SCHEMA","subject":"s","version":1,"magic":1}',
     b'{"id":1,"schema":"syntax = \\"proto3\\";","schemaType":"PROTOBUF"}'),
    (b'{"keytype":"CONFIG","subject":"s","magic":0}', b'{"compatibilityLevel":"SIDEWAYS"}'),
])
def test_unreadable_records_raise_and_change_nothing(key: bytes, value: bytes) -> None:
    """Each malformed or foreign record is a DecodeError and leaves the state as it was."""
    state = folded(schema_record(SubjectVersion("s", 1, 1), A))
    with pytest.raises(DecodeError):
        state.apply(key, value)
    assert [(v.version, v.schema_id) for v in state.versions("s")] == [(1, 1)]
    assert state.subject_level("s") is None
    assert state.max_id == 1


def test_a_second_schema_under_a_taken_id_is_refused() -> None:
    """Two registries racing may give one id to two schemas; the later record is skipped, not served."""
    state = folded(schema_record(SubjectVersion("s", 1, 1), A))
    with pytest.raises(DecodeError, match="second, different schema"):
        state.apply(*schema_record(SubjectVersion("t", 1, 1), B))
    assert state.subjects() == ["s"]
    assert state.id_of(A) == 1
    assert state.id_of(B) is None


def test_a_schema_parsed_in_a_worker_is_reused_when_its_record_is_read_back() -> None:
    """A registration's record carries the text the worker parsed: applying it parses nothing again."""
    state = RegistryState()
    parsed_elsewhere = parse_schema(A.text)
    state.expect(parsed_elsewhere)
    state.apply(*schema_record(SubjectVersion("s", 1, 1), parsed_elsewhere))
    assert state.schema(1) is parsed_elsewhere
    state.expect(B)
    state.forget_expected(B)
    state.apply(*schema_record(SubjectVersion("s", 2, 2), B))
    assert state.schema(2) is not B  # forgotten: parsed from the record's text
    assert state.id_of(B) == 2
