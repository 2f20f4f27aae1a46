"""Records in the Confluent wire format: magic byte 0, a big-endian 4-byte schema id, Avro binary.

Records are plain Python: uuids are `str`, timestamps are `int` milliseconds since the epoch and
dates `int` days. Logical types do not change the binary encoding, so the codec parses schemas
without them and skips the per-field conversions to `UUID` and `datetime` that would cost more than
the decoding itself.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro import schemaless_reader, schemaless_writer

from liaison.errors import DecodeError, LiaisonError

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
HEADER_SIZE = HEADER.size


class EncodeError(LiaisonError, ValueError):
    """A record does not fit its schema; nothing was sent."""


class BadMagicByte(DecodeError):
    code = "BAD_MAGIC_BYTE"


class UnknownSchemaId(DecodeError):
    code = "UNKNOWN_SCHEMA_ID"

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"schema id {schema_id} is not known to the registry")
        self.schema_id = schema_id


class TruncatedRecord(DecodeError):
    code = "TRUNCATED"


class SchemaMismatch(DecodeError):
    code = "SCHEMA_MISMATCH"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


class _RandomHex:
    """os.urandom's bytes as hex, read 4 KiB at a time: one system call per 256 uuids, not per uuid.
    Thread-safe; a forked child starts with fresh bytes, never its parent's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hex, self._at = "", 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._hex, self._at = "", 0

    def take32(self) -> str:
        with self._lock:
            at = self._at
            if at >= len(self._hex):
                self._hex, at = os.urandom(4096).hex(), 0
            self._at = at + 32
            return self._hex[at:at + 32]


_RANDOM = _RandomHex()


def random_uuid() -> str:
    """`str(uuid.uuid4())` in a fraction of the time: the same 122 random bits from os.urandom,
    version and variant, without a system call and a UUID object each (the router makes two per
    message it routes)."""
    h = _RANDOM.take32()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def strip_logical_types(node: Any) -> Any:
    """The same schema without logicalType annotations (identical on the wire)."""
    if isinstance(node, dict):
        return {k: strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [strip_logical_types(v) for v in node]
    return node


def parse_wire_schema(schema: dict[str, Any] | str) -> Any:
    """fastavro's parsed form of a schema, without logical types."""
    raw = json.loads(schema) if isinstance(schema, str) else schema
    return fastavro.parse_schema(strip_logical_types(raw))


def split_header(data: bytes | None) -> int:
    """The schema id of a wire-format record, or a DecodeError saying what is wrong."""
    if data is None or len(data) == 0:
        raise TruncatedRecord("empty record: no Confluent header")
    if data[0] != MAGIC_BYTE:
        raise BadMagicByte(f"first byte is {data[0]}, not the Confluent magic byte 0")
    if len(data) < HEADER_SIZE:
        raise TruncatedRecord(f"record of {len(data)} bytes is shorter than the 5-byte header")
    return int(HEADER.unpack_from(data)[1])


# -- compiled writers ------------------------------------------------------------------------------
# fastavro's writer interprets the schema for every value (about 1 µs a field); the router writes a
# Receipt and an AuditRecord for every message it routes. A writer compiled to Python source per
# schema does the same work in straight-line code, several times faster, with the same bytes.

_MIN_LONG, _MAX_LONG = -(2**63), 2**63 - 1
_MIN_INT, _MAX_INT = -(2**31), 2**31 - 1
_SHORT = [bytes([n << 1]) for n in range(64)]
"""The varint of a length below 64: one byte."""


def _varint(n: int) -> bytes:
    """Avro's zigzag varint of a long."""
    if not _MIN_LONG <= n <= _MAX_LONG:
        raise OverflowError(f"{n} does not fit an Avro long")
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _int(n: int) -> bytes:
    """An Avro int: a long that fits 32 bits (fastavro would write a longer one unchecked)."""
    if not _MIN_INT <= n <= _MAX_INT:
        raise OverflowError(f"{n} does not fit an Avro int")
    return _varint(n)


def _bytes(value: Any) -> bytes:
    """The bytes of a `bytes` value, as fastavro accepts them (any bytes-like object)."""
    return value if type(value) is bytes else bytes(memoryview(value))


_PRIMITIVES: dict[str, tuple[str, ...]] = {
    "null": ("if {v} is not None: raise TypeError('null expected')",),
    "boolean": ("o += b'\\x01' if {v} else b'\\x00'",),
    "int": ("o += _int({v})",),
    "long": ("o += _varint({v})",),
    "string": ("if not isinstance({v}, str): raise TypeError('must be string')", "{b} = {v}.encode()",
               "{n} = len({b})", "o += _SHORT[{n}] if {n} < 64 else _varint({n})", "o += {b}"),
    "bytes": ("{b} = _bytes({v})", "o += _varint(len({b}))", "o += {b}"),
}
"""Source lines writing a primitive value `v` to the bytearray `o` (`b`, `n`: temporaries)."""


class _WriterSource:
    """Python source of a writer for one parsed schema: one function per named record."""

    prefix = "w"

    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named
        self.functions: dict[str, list[str]] = {}  # function name -> its lines
        self._records: dict[str, str] = {}  # record name -> its function's name
        self.constants: dict[str, Any] = {}
        self._temp = 0

    def function(self, schema: Mapping[str, Any]) -> tuple[str, list[str] | None]:
        """The name of the function for record `schema`, and its lines to fill when it is new. The
        name is made of ASCII only (the record's name, from a registry, is never part of the code)."""
        found = self._records.get(schema["name"])
        if found is not None:
            return found, None
        fn = self._records[schema["name"]] = f"{self.prefix}{len(self._records)}"
        lines = self.functions[fn] = []
        return fn, lines

    def constant(self, value: Any) -> str:
        name = f"_c{len(self.constants)}"
        self.constants[name] = value
        return name

    def temp(self) -> str:
        self._temp += 1
        return f"v{self._temp}"

    def record(self, schema: Mapping[str, Any]) -> str:
        """The name of the function writing record `schema` (compiled on first use)."""
        fn, lines = self.function(schema)
        if lines is not None:
            for field in schema["fields"]:
                v = self.temp()
                name, kind = field["name"], field["type"]
                if "default" in field:
                    lines.append(f"{v} = r.get({name!r}, {self.constant(field['default'])})")
                elif _nullable(kind):
                    lines.append(f"{v} = r.get({name!r})")
                else:
                    lines.append(f"{v} = r[{name!r}]")
                lines += self.value(kind, v)
        return fn

    def resolve(self, kind: Any) -> Any:
        """A named type's definition for its name; a primitive's name for its object form."""
        if isinstance(kind, str) and kind in self.named:
            kind = self.named[kind]
        if isinstance(kind, dict) and kind["type"] in _PRIMITIVES:
            kind = kind["type"]
        return kind

    def value(self, kind: Any, v: str) -> list[str]:
        """Lines appending the encoding of the value in variable `v` to `o`."""
        kind = self.resolve(kind)
        if isinstance(kind, list):
            return self.union(kind, v)
        if isinstance(kind, str) and kind in _PRIMITIVES:
            b, n = self.temp(), self.temp()
            return [line.format(v=v, b=b, n=n) for line in _PRIMITIVES[kind]]
        if not isinstance(kind, dict):
            raise _Unsupported(kind)
        if kind["type"] == "enum":
            return [f"o += {self.constant({s: _varint(i) for i, s in enumerate(kind['symbols'])})}[{v}]"]
        if kind["type"] == "record":
            return [f"{self.record(kind)}({v}, o)"]
        if kind["type"] not in ("array", "map"):
            raise _Unsupported(kind)
        item = self.temp()
        if kind["type"] == "array":
            loop, body = f"for {item} in {v}:", self.value(kind["items"], item)
        else:
            key = self.temp()
            loop = f"for {key}, {item} in {v}.items():"
            body = self.value("string", key) + self.value(kind["values"], item)
        return [f"if len({v}):", f"    o += _varint(len({v}))", f"    {loop}",
                *(f"        {line}" for line in body), "o += b'\\x00'"]

    def union(self, branches: list[Any], v: str) -> list[str]:
        """A union of null and one other type, the only unions of the contract."""
        if len(branches) != 2 or "null" not in branches:
            raise _Unsupported(branches)
        null = branches.index("null")
        other = branches[1 - null]
        return [f"if {v} is None:", f"    o += {_varint(null)!r}", "else:", f"    o += {_varint(1 - null)!r}",
                *(f"    {line}" for line in self.value(other, v))]


class _Unsupported(Exception):  # a schema the compiled writer does not cover: fastavro writes it
    pass


def _nullable(kind: Any) -> bool:
    return kind == "null" or (isinstance(kind, list) and "null" in kind)


def compile_writer(parsed: Any, header: bytes) -> Callable[[Mapping[str, Any]], bytes] | None:
    """`record -> header + Avro binary` for a parsed record schema, or None when it uses a type the
    compiled writer does not cover (fixed, float, double, other unions): fastavro writes those."""
    entry = f"def write(r):\n    o = bytearray({header!r})\n    {{top}}(r, o)\n    return bytes(o)\n"
    writer: Callable[[Mapping[str, Any]], bytes] | None = _compile(
        _WriterSource, parsed, "r, o", entry,
        {"_varint": _varint, "_int": _int, "_bytes": _bytes, "_SHORT": _SHORT})
    return writer


def _compile(kind: type[_WriterSource], parsed: Any, args: str, entry: str, helpers: dict[str, Any]
             ) -> Any:
    """The function `entry` defines (`{top}`: the top record's function) over the functions `kind`
    generates for `parsed`, each taking `args`; None when the schema is not covered."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    source = kind(parsed.get("__named_schemas", {}))
    try:
        top = source.record(parsed)
    except _Unsupported:
        return None
    lines = [f"def {fn}({args}):\n" + "".join(f"    {line}\n" for line in body)
             for fn, body in source.functions.items()]
    lines.append(entry.replace("{top}", top))
    scope: dict[str, Any] = {**helpers, **source.constants}
    exec(compile("".join(lines), f"<{kind.__name__} of {parsed['name']!r}>", "exec"), scope)  # noqa: S102  # source made here, names and values of the schema only as repr() or constants
    return scope[entry[4:entry.index("(")]]


# -- compiled readers ------------------------------------------------------------------------------
# The same idea for the one record the router reads per message. Whatever the bytes, a compiled
# reader raises only EOFError (the data ends early) or ValueError / UnicodeDecodeError (they do not
# match the schema), which `Codec.decode` turns into its DecodeErrors.

def _read_long(d: bytes, p: int) -> tuple[int, int]:
    """A zigzag varint at `d[p:]` of at most 10 bytes: (value, next position)."""
    b = d[p]  # none: the data ends early (IndexError)
    n, shift = b & 0x7F, 7
    while b & 0x80:
        p += 1
        if shift > 63 or p >= len(d):  # fastavro too calls a varint cut short a mismatch
            raise ValueError("varint longer than 10 bytes or cut short")
        b = d[p]
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), p + 1


class _ReaderSource(_WriterSource):
    """Python source of a reader for one parsed schema: one function per named record, each
    `(data, position) -> (record, next position)`."""

    prefix = "r"

    def record(self, schema: Mapping[str, Any]) -> str:
        fn, lines = self.function(schema)
        if lines is not None:
            names = []
            for field in schema["fields"]:
                v = self.temp()
                names.append(f"{field['name']!r}: {v}")
                lines += self.value(field["type"], v)
            lines.append(f"return {{{', '.join(names)}}}, p")
        return fn

    def long(self, v: str) -> list[str]:
        """Lines reading a long into `v`: one byte inline, longer ones by `_read_long`."""
        return ["b = d[p]", "if b < 0x80:", f"    {v} = (b >> 1) ^ -(b & 1)", "    p += 1",
                "else:", f"    {v}, p = _read_long(d, p)"]

    def sized(self, v: str) -> list[str]:
        """Lines reading a length-prefixed bytes value into `v`."""
        return [*self.long(v), f"e = p + {v}",  # a negative length is an early end, as for fastavro
                f"if {v} < 0 or e > len(d): raise EOFError('data ends inside a value')",
                f"{v} = d[p:e]", "p = e"]

    def value(self, kind: Any, v: str) -> list[str]:
        """Lines reading a value of `kind` into variable `v`."""
        kind = self.resolve(kind)
        if isinstance(kind, list):
            return self.union(kind, v)
        if isinstance(kind, str):
            return self.primitive(kind, v)
        if not isinstance(kind, dict):
            raise _Unsupported(kind)
        if kind["type"] == "enum":
            symbols, top = self.constant(tuple(kind["symbols"])), len(kind["symbols"])
            return [*self.long(v), f"if not 0 <= {v} < {top}: raise ValueError('no such symbol')",
                    f"{v} = {symbols}[{v}]"]
        if kind["type"] == "record":
            return [f"{v}, p = {self.record(kind)}(d, p)"]
        return self.repeated(kind, v)

    def primitive(self, kind: str, v: str) -> list[str]:
        if kind == "null":
            return [f"{v} = None"]
        if kind == "boolean":
            return [f"{v} = d[p] != 0", "p += 1"]  # as fastavro reads it
        if kind in ("int", "long"):
            return self.long(v)
        if kind == "bytes":
            return self.sized(v)
        if kind == "string":
            return [*self.sized(v), f"{v} = {v}.decode()"]
        raise _Unsupported(kind)

    def repeated(self, kind: Mapping[str, Any], v: str) -> list[str]:
        """An array or a map, in blocks (a negative count is followed by the block's size)."""
        if kind["type"] not in ("array", "map"):
            raise _Unsupported(kind)
        if kind["type"] == "array" and self.resolve(kind["items"]) == "null":
            raise _Unsupported(kind)  # items of no bytes: a hostile count would loop on nothing
        count, item = self.temp(), self.temp()
        if kind["type"] == "array":
            body, add, empty = self.value(kind["items"], item), f"{v}.append({item})", "[]"
        else:
            key = self.temp()
            body, add, empty = [*self.value("string", key), *self.value(kind["values"], item)], \
                f"{v}[{key}] = {item}", "{}"
        return [f"{v} = {empty}", "while True:", *(f"    {line}" for line in self.long(count)),
                f"    if {count} == 0: break", f"    if {count} < 0:", f"        {count} = -{count}",
                *(f"        {line}" for line in self.long("_")),
                f"    for _ in range({count}):", *(f"        {line}" for line in body),
                f"        {add}"]

    def union(self, branches: list[Any], v: str) -> list[str]:
        if len(branches) != 2 or "null" not in branches:
            raise _Unsupported(branches)
        null = branches.index("null")
        return [*self.long(v), f"if {v} == {null}:", f"    {v} = None", f"elif {v} == {1 - null}:",
                *(f"    {line}" for line in self.value(branches[1 - null], v)),
                "else:", "    raise ValueError('no such branch of the union')"]


def compile_reader(parsed: Any) -> Callable[[bytes, int], tuple[dict[str, Any], int]] | None:
    """`(data, position) -> (record, position after it)` for a parsed record schema, or None when
    it uses a type the compiled reader does not cover: fastavro reads those."""
    entry = ("def read(d, p):\n    try:\n        return {top}(d, p)\n    except IndexError:\n"
             "        raise EOFError('data ends inside a value') from None\n")
    reader: Callable[[bytes, int], tuple[dict[str, Any], int]] | None = _compile(
        _ReaderSource, parsed, "d, p", entry, {"_read_long": _read_long})
    return reader


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """A schema as registered: its id, record name, and parsed forms for reading."""

    schema_id: int
    name: str
    parsed: Any
    reader: Any | None  # our local version of the same type when it differs from the writer's
    read: Callable[[bytes, int], tuple[dict[str, Any], int]] | None = None  # compiled, when no reader


class Codec:
    """Encodes our record types and decodes any registered schema id, with reader resolution.

    Decoding is synchronous and cache-only; an id seen for the first time raises UnknownSchemaId,
    after which the caller may fetch the schema from the registry (`learn`) and try again.
    """

    def __init__(self) -> None:
        self._by_id: dict[int, WriterSchema] = {}
        self._write: dict[str, tuple[bytes, Any]] = {}  # name -> (header, parsed schema)
        self._local: dict[str, tuple[str, Any]] = {}  # name -> (canonical form, parsed schema)
        self._writers: dict[str, Callable[[Mapping[str, Any]], bytes]] = {}  # name -> compiled writer

    # -- what the codec knows -------------------------------------------------------------------
    def use(self, name: str, schema: dict[str, Any] | str, schema_id: int) -> None:
        """Our own version of record type `name`, registered as `schema_id`: used to write and read."""
        parsed = parse_wire_schema(schema)
        self._local[name] = (fastavro.schema.to_parsing_canonical_form(parsed), parsed)
        self._write[name] = (HEADER.pack(MAGIC_BYTE, schema_id), parsed)
        writer = compile_writer(parsed, HEADER.pack(MAGIC_BYTE, schema_id))
        if writer is None:
            self._writers.pop(name, None)
        else:
            self._writers[name] = writer
        self.learn(schema_id, schema)

    def learn(self, schema_id: int, schema: dict[str, Any] | str) -> WriterSchema:
        """A writer schema fetched from the registry for `schema_id`."""
        raw = json.loads(schema) if isinstance(schema, str) else schema
        parsed = parse_wire_schema(raw)
        name = str(raw.get("name", "")).rsplit(".", 1)[-1] if isinstance(raw, dict) else ""
        reader = None
        if name in self._local:
            canonical, local = self._local[name]
            if fastavro.schema.to_parsing_canonical_form(parsed) != canonical:
                reader = local
        entry = WriterSchema(schema_id, name, parsed, reader,
                             compile_reader(parsed) if reader is None else None)
        self._by_id[schema_id] = entry
        return entry

    def knows(self, schema_id: int) -> bool:
        return schema_id in self._by_id

    def schema_id_of(self, name: str) -> int:
        header, _ = self._write[name]
        return int(HEADER.unpack(header)[1])

    # -- the hot path ---------------------------------------------------------------------------
    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        try:
            header, parsed = self._write[name]
        except KeyError:
            raise EncodeError(f"no schema registered for record type {name}") from None
        writer = self._writers.get(name)
        try:
            if writer is not None:
                return writer(record)
            buf = io.BytesIO()
            buf.write(header)
            schemaless_writer(buf, parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, IndexError) as exc:
            raise EncodeError(f"{name} record does not fit its schema: {exc!r}") from None
        return buf.getvalue()

    def decode(self, data: bytes | None) -> tuple[str, dict[str, Any]]:
        """(record type name, record); read with our local schema when the writer used another."""
        schema_id = split_header(data)
        assert data is not None  # split_header refused None
        entry = self._by_id.get(schema_id)
        if entry is None:
            raise UnknownSchemaId(schema_id)
        if entry.read is not None:
            return entry.name, self._read(entry, data)
        buf = io.BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(buf, entry.parsed, entry.reader)
        except (EOFError, StopIteration, struct.error) as exc:
            raise TruncatedRecord(f"record ends early for schema {schema_id} ({entry.name}): "
                                  f"{exc or 'end of data'}") from None
        except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError,
                fastavro.read.SchemaResolutionError) as exc:
            raise SchemaMismatch(f"bytes do not match schema {schema_id} ({entry.name}): {exc}") from None
        if buf.tell() != len(data):
            raise SchemaMismatch(f"{len(data) - buf.tell()} bytes left over after reading schema "
                                 f"{schema_id} ({entry.name})")
        if not isinstance(record, dict):
            raise SchemaMismatch(f"schema {schema_id} is not a record schema")
        return entry.name, record

    @staticmethod
    def _read(entry: WriterSchema, data: bytes) -> dict[str, Any]:
        """A record by the entry's compiled reader, with the DecodeErrors of fastavro's path."""
        assert entry.read is not None
        try:
            record, end = entry.read(data, HEADER_SIZE)
        except EOFError as exc:
            raise TruncatedRecord(f"record ends early for schema {entry.schema_id} ({entry.name}): "
                                  f"{exc or 'end of data'}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise SchemaMismatch(f"bytes do not match schema {entry.schema_id} ({entry.name}): {exc}") \
                from None
        if end != len(data):
            raise SchemaMismatch(f"{len(data) - end} bytes left over after reading schema "
                                 f"{entry.schema_id} ({entry.name})")
        return record
