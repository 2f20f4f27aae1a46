"""Hypothesis strategies that generate any valid record of an Avro schema (plain-Python form)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "bytes": st.binary(max_size=64),
    "string": st.text(max_size=40),
}
_LOGICAL: dict[str, st.SearchStrategy[Any]] = {
    "uuid": st.uuids().map(str),
    "timestamp-millis": st.integers(0, 4_102_444_800_000),
    "date": st.integers(-50_000, 50_000),
}


def records(schema: Any) -> st.SearchStrategy[Any]:
    """A strategy for values of `schema` (a standalone schema: named types defined before use)."""
    return _strategy(schema, {}, None)


def _strategy(node: Any, named: dict[str, Any], ns: str | None) -> st.SearchStrategy[Any]:  # noqa: PLR0911  # one return per Avro type
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return _PRIMITIVES[node]
        full = node if "." in node else f"{ns}.{node}"
        return st.deferred(lambda: named[full])
    if isinstance(node, list):
        return st.one_of([_strategy(branch, named, ns) for branch in node])
    kind = node["type"]
    if node.get("logicalType") in _LOGICAL:
        return _LOGICAL[node["logicalType"]]
    if kind == "record":
        ns = node.get("namespace", ns)
        full = node["name"] if "." in node["name"] else f"{ns}.{node['name']}"
        fields = {f["name"]: _strategy(f["type"], named, ns) for f in node["fields"]}
        named[full] = st.fixed_dictionaries(fields)
        return named[full]
    if kind == "enum":
        ns = node.get("namespace", ns)
        named[f"{ns}.{node['name']}"] = st.sampled_from(node["symbols"])
        return named[f"{ns}.{node['name']}"]
    if kind == "array":
        return st.lists(_strategy(node["items"], named, ns), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=10), _strategy(node["values"], named, ns), max_size=3)
    return _strategy(kind, named, ns)
