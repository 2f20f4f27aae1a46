"""The `_schemas` topic folded into memory, and the records that change it (no Kafka here).

Records follow Confluent Schema Registry and Karapace, so either can read a topic we wrote:

- key `{"keytype":"SCHEMA","subject":S,"version":V,"magic":1}`,
  value `{"subject","version","id","schema","deleted"}`; a tombstone hard-deletes the version;
- key `{"keytype":"CONFIG","subject":S or null,"magic":0}`, value `{"compatibilityLevel":L}`;
  a tombstone removes the level (null subject: the global one);
- key `{"keytype":"DELETE_SUBJECT","subject":S,"magic":0}`, value `{"subject","version"}`:
  versions up to V soft-deleted (Confluent writes it; we read it);
- key `{"keytype":"NOOP","magic":0}`: ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from liaison.errors import DecodeError, SchemaError
from services.registry.compat import AvroSchema, CompatibilityLevel, parse_schema


@dataclass(frozen=True)
class SubjectVersion:
    """One version of one subject: which schema id it holds and whether it was soft-deleted."""

    subject: str
    version: int
    schema_id: int
    deleted: bool = False


Record = tuple[bytes, bytes | None]


def _dump(data: dict[str, Any]) -> bytes:
    # Compact and in a fixed field order: compaction needs the same key to be the same bytes.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def schema_record(entry: SubjectVersion, schema: AvroSchema) -> Record:
    key = {"keytype": "SCHEMA", "subject": entry.subject, "version": entry.version, "magic": 1}
    value = {"subject": entry.subject, "version": entry.version, "id": entry.schema_id,
             "schema": schema.text, "deleted": entry.deleted}
    return _dump(key), _dump(value)


def schema_tombstone(subject: str, version: int) -> Record:
    return _dump({"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1}), None


def config_record(subject: str | None, level: CompatibilityLevel | None) -> Record:
    """The level of one subject (or the global one with subject None); level None removes it."""
    key = _dump({"keytype": "CONFIG", "subject": subject, "magic": 0})
    return key, None if level is None else _dump({"compatibilityLevel": level.value})


class RegistryState:
    """Subjects, versions, schemas by id and compatibility levels, as the records so far say."""

    def __init__(self, default_level: CompatibilityLevel = CompatibilityLevel.BACKWARD) -> None:
        self.default_level = default_level
        self.global_level: CompatibilityLevel | None = None
        self.max_id = 0  # never decreases: ids are not reused, even after a hard delete
        self._schemas: dict[int, AvroSchema] = {}
        self._ids: dict[str, int] = {}  # canonical form -> id
        self._uses: dict[int, set[tuple[str, int]]] = {}  # id -> (subject, version) holding it
        self._subjects: dict[str, dict[int, SubjectVersion]] = {}
        self._subject_levels: dict[str, CompatibilityLevel] = {}
        self._expected: dict[str, AvroSchema] = {}  # text -> parsed, for records about to be read back

    # -- applying records ------------------------------------------------------------------

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one record in.

        Raises:
            DecodeError: the record is not one we can read; the state is unchanged.
        """
        fields = _load(key, "key")
        if fields is None:
            raise DecodeError("record without a key")
        keytype = fields.get("keytype")
        body = _load(value, "value")
        if keytype == "SCHEMA":
            subject, version = _subject(fields), _int(fields, "version")
            if body is None:
                self._remove_version(subject, version)
            else:
                self._apply_schema(subject, version, body)
        elif keytype == "CONFIG":
            scope = fields.get("subject")
            if scope is not None and not isinstance(scope, str):
                raise DecodeError(f"config key with a bad subject: {fields}")
            level = None
            if body is not None:
                try:
                    level = CompatibilityLevel.parse(body.get("compatibilityLevel"))
                except ValueError as exc:
                    raise DecodeError(str(exc)) from None
            self._set_level(scope, level)
        elif keytype == "DELETE_SUBJECT":
            if body is not None:
                self._soft_delete_up_to(_subject(fields), _int(body, "version"))
        elif keytype != "NOOP":
            raise DecodeError(f"unknown record key type {keytype!r}")

    def _apply_schema(self, subject: str, version: int, body: dict[str, Any]) -> None:
        schema_id = _int(body, "id")
        schema_type = body.get("schemaType") or "AVRO"
        if schema_type != "AVRO":
            raise DecodeError(f"{subject} version {version} is a {schema_type} schema; only AVRO is served")
        text = body.get("schema")
        if not isinstance(text, str):
            raise DecodeError(f"{subject} version {version} has no schema text")
        schema = self._schemas.get(schema_id)
        if schema is None or schema.text != text:
            parsed = self._expected.pop(text, None)
            try:
                parsed = parsed or parse_schema(text)
            except SchemaError as exc:
                raise DecodeError(f"{subject} version {version}: {exc}") from None
            if schema is not None and parsed.canonical != schema.canonical:
                # Only two registries writing at once can do this; serving it would decode wrongly.
                raise DecodeError(f"{subject} version {version} gives id {schema_id} to a second, "
                                  "different schema; record skipped")
            schema = schema or parsed
        self._remove_version(subject, version)
        self._schemas[schema_id] = schema
        self._ids.setdefault(schema.canonical, schema_id)
        self._uses.setdefault(schema_id, set()).add((subject, version))
        entry = SubjectVersion(subject, version, schema_id, deleted=bool(body.get("deleted", False)))
        self._subjects.setdefault(subject, {})[version] = entry
        self.max_id = max(self.max_id, schema_id)

    def _remove_version(self, subject: str, version: int) -> None:
        entry = self._subjects.get(subject, {}).pop(version, None)
        if entry is None:
            return
        if not self._subjects[subject]:
            del self._subjects[subject]
        uses = self._uses.get(entry.schema_id, set())
        uses.discard((subject, version))
        if not uses:  # no version holds this schema any more: its id is gone (and never reused)
            self._uses.pop(entry.schema_id, None)
            schema = self._schemas.pop(entry.schema_id, None)
            if schema is not None and self._ids.get(schema.canonical) == entry.schema_id:
                del self._ids[schema.canonical]
                # Two writers racing may have given one schema two ids: the other one takes over.
                for other_id, other in self._schemas.items():
                    if other.canonical == schema.canonical:
                        self._ids[schema.canonical] = other_id
                        break

    def _soft_delete_up_to(self, subject: str, last: int) -> None:
        versions = self._subjects.get(subject, {})
        for number, entry in versions.items():
            if number <= last:
                versions[number] = replace(entry, deleted=True)

    def _set_level(self, subject: str | None, level: CompatibilityLevel | None) -> None:
        if subject is None:
            self.global_level = level
        elif level is None:
            self._subject_levels.pop(subject, None)
        else:
            self._subject_levels[subject] = level

    def expect(self, schema: AvroSchema) -> None:
        """A schema parsed elsewhere (in a worker) that a record about to be read back will carry.

        Its text is exactly the record's, so applying the record reuses it instead of parsing the
        text again on the event loop.
        """
        self._expected[schema.text] = schema

    def forget_expected(self, schema: AvroSchema) -> None:
        self._expected.pop(schema.text, None)

    # -- reading ---------------------------------------------------------------------------

    @property
    def schema_count(self) -> int:
        """Distinct schemas (ids) still held by at least one version, soft-deleted or not."""
        return len(self._schemas)

    def schema(self, schema_id: int) -> AvroSchema | None:
        return self._schemas.get(schema_id)

    def id_of(self, schema: AvroSchema) -> int | None:
        """The id this schema already has under any subject, by canonical form."""
        return self._ids.get(schema.canonical)

    def uses(self, schema_id: int, *, deleted: bool = False) -> list[SubjectVersion]:
        """Every (subject, version) holding a schema id, soft-deleted ones only when asked."""
        entries = [self._subjects[subject][version]
                   for subject, version in self._uses.get(schema_id, set())]
        return sorted((e for e in entries if deleted or not e.deleted),
                      key=lambda e: (e.subject, e.version))

    def subjects(self, *, deleted: bool = False) -> list[str]:
        """Subjects with a live version, or with any version when `deleted`."""
        return sorted(subject for subject, versions in self._subjects.items()
                      if deleted or any(not entry.deleted for entry in versions.values()))

    def versions(self, subject: str, *, deleted: bool = False) -> list[SubjectVersion]:
        """A subject's versions, oldest first; soft-deleted ones only when `deleted`."""
        versions = self._subjects.get(subject, {})
        return [versions[number] for number in sorted(versions)
                if deleted or not versions[number].deleted]

    def next_version(self, subject: str) -> int:
        """Versions keep counting past soft-deleted ones."""
        return max(self._subjects.get(subject, {}), default=0) + 1

    def subject_level(self, subject: str) -> CompatibilityLevel | None:
        return self._subject_levels.get(subject)

    def effective_global_level(self) -> CompatibilityLevel:
        return self.global_level or self.default_level

    def level_for(self, subject: str) -> CompatibilityLevel:
        return self._subject_levels.get(subject) or self.effective_global_level()


def _load(raw: bytes | None, what: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise DecodeError(f"record {what} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError(f"record {what} is not a JSON object: {raw[:200]!r}")
    return data


def _subject(fields: dict[str, Any]) -> str:
    subject = fields.get("subject")
    if not isinstance(subject, str) or not subject:
        raise DecodeError(f"record without a subject: {fields}")
    return subject


def _int(fields: dict[str, Any], name: str) -> int:
    value = fields.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DecodeError(f"record field {name!r} is not a number: {fields}")
    return value
