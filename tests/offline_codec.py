"""A Codec without a registry: every record type under made-up schema ids, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

from liaison.codec import Codec
from liaison.schemas import RECORD_TYPES, SchemaCatalog, load_catalog


def offline_codec(names: Sequence[str] = RECORD_TYPES, catalog: SchemaCatalog | None = None) -> Codec:
    """`names` under ids 1, 2, ... in their order."""
    catalog = catalog or load_catalog()
    out = Codec()
    for schema_id, name in enumerate(names, start=1):
        out.use(name, catalog.standalone(name), schema_id)
    return out
