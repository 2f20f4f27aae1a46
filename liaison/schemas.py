"""The Avro contract in `schemas/`: loaded once, named types inlined so each record type stands alone.

Each file holds one named type, `liaison.<Name>.avsc`; a record type refers to shared types
(`liaison.Envelope`, enums) by name. Registering needs a standalone schema, so the catalog inlines
each referenced type at its first use, as Avro's own parsers expect.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from liaison.errors import SchemaError

NAMESPACE = "liaison"
RECORD_TYPES = ("Alert", "Query", "Reply", "Receipt", "AuditRecord", "DeadLetter")
"""Top-level record types: each is registered under its record name (`liaison.Alert`, ...)."""

MESSAGE_TYPES = ("Alert", "Query", "Reply")
"""Record types agencies send; each has its `<type>s.out.<AGENCY>` and `<type>s.in.<AGENCY>` topics."""

COMPATIBILITY = "FULL_TRANSITIVE"
"""Level of every liaison subject: agencies upgrade at different times, so old and new readers and
writers must all understand each other, across every released version."""

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "enum", "fixed"})


def default_schema_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "schemas"


def subject_for(name: str) -> str:
    """Record name subject strategy: one subject per record type, whatever the topic."""
    return f"{NAMESPACE}.{name}"


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name else f"{namespace or NAMESPACE}.{name}"


@dataclass(frozen=True)
class SchemaCatalog:
    """Every named type found in a schema folder, and standalone forms of the record types."""

    directory: Path
    definitions: dict[str, dict[str, Any]]
    _standalone: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def standalone(self, name: str) -> dict[str, Any]:
        """The schema of `name` with every referenced named type inlined at its first use."""
        full = _full_name(name, NAMESPACE)
        if full not in self.definitions:
            raise SchemaError(f"no schema named {full} in {self.directory}")
        if full not in self._standalone:
            self._standalone[full] = self._inline(copy.deepcopy(self.definitions[full]), set(), None)
        return self._standalone[full]

    def standalone_json(self, name: str) -> str:
        return json.dumps(self.standalone(name), separators=(",", ":"))

    def _inline(self, node: Any, defined: set[str], namespace: str | None) -> Any:
        if isinstance(node, str):
            if node in PRIMITIVES:
                return node
            full = _full_name(node, namespace)
            if full in defined:
                return full
            if full not in self.definitions:
                raise SchemaError(f"unknown type {full} (no file {full}.avsc in {self.directory})")
            return self._inline(copy.deepcopy(self.definitions[full]), defined, namespace)
        if isinstance(node, list):
            return [self._inline(item, defined, namespace) for item in node]
        if isinstance(node, dict):
            kind = node.get("type")
            if kind in NAMED:
                namespace = node.get("namespace", namespace)
                defined.add(_full_name(node["name"], namespace))
            if kind == "record":
                for fld in node["fields"]:
                    fld["type"] = self._inline(fld["type"], defined, namespace)
            elif kind == "array":
                node["items"] = self._inline(node["items"], defined, namespace)
            elif kind == "map":
                node["values"] = self._inline(node["values"], defined, namespace)
            elif isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in PRIMITIVES
                                                     and kind not in NAMED | {"array", "map"}):
                node["type"] = self._inline(kind, defined, namespace)
            return node
        raise SchemaError(f"unexpected schema node {node!r}")


def load_catalog(directory: Path | None = None) -> SchemaCatalog:
    """Read every `*.avsc` in `directory` (default: the repository's `schemas/`)."""
    return _load_catalog(directory or default_schema_dir())


@lru_cache(maxsize=8)
def _load_catalog(directory: Path) -> SchemaCatalog:
    definitions: dict[str, dict[str, Any]] = {}
    files = sorted(directory.glob("*.avsc"))
    if not files:
        raise SchemaError(f"no .avsc files in {directory}")
    for path in files:
        try:
            schema = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{path.name}: not JSON: {exc}") from None
        if not isinstance(schema, dict) or schema.get("type") not in NAMED:
            raise SchemaError(f"{path.name}: must hold one named type (record, enum or fixed)")
        full = _full_name(schema["name"], schema.get("namespace"))
        if path.stem != full:
            raise SchemaError(f"{path.name}: holds {full}; the file must be named {full}.avsc")
        definitions[full] = schema
    return SchemaCatalog(directory=directory, definitions=definitions)
