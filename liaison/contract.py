"""The contract at run time: register our schemas once at start and give a ready Codec."""

from __future__ import annotations

from dataclasses import dataclass

from liaison.codec import Codec
from liaison.registry_client import RegistryClient
from liaison.schemas import COMPATIBILITY, RECORD_TYPES, SchemaCatalog, load_catalog, subject_for


@dataclass(frozen=True)
class Registration:
    name: str
    subject: str
    schema_id: int
    version: int | None
    created: bool


async def register_all(client: RegistryClient, catalog: SchemaCatalog | None = None) -> list[Registration]:
    """Register every record type under its record-name subject; already registered is a no-op."""
    catalog = catalog or load_catalog()
    done = []
    for name in RECORD_TYPES:
        subject, schema = subject_for(name), catalog.standalone_json(name)
        if await client.get_compatibility(subject) != COMPATIBILITY:
            await client.set_compatibility(COMPATIBILITY, subject)
        existing = await client.lookup(subject, schema)
        if existing is not None:
            done.append(Registration(name, subject, int(existing["id"]), existing.get("version"), False))
            continue
        schema_id = await client.register(subject, schema)
        found = await client.lookup(subject, schema)
        done.append(Registration(name, subject, schema_id, found.get("version") if found else None, True))
    return done


async def ready_codec(client: RegistryClient, catalog: SchemaCatalog | None = None) -> Codec:
    """A Codec that writes every record type under its registered id (registering if needed)."""
    catalog = catalog or load_catalog()
    codec = Codec()
    for reg in await register_all(client, catalog):
        codec.use(reg.name, catalog.standalone(reg.name), reg.schema_id)
    return codec


async def learn_unknown(codec: Codec, client: RegistryClient, schema_id: int) -> bool:
    """Fetch a writer schema the codec has not seen; False when the registry does not know it."""
    from liaison.errors import RegistryError  # noqa: PLC0415

    try:
        codec.learn(schema_id, await client.schema_by_id(schema_id))
    except RegistryError as exc:
        if exc.status == 404:
            return False
        raise
    return True


__all__ = ["Registration", "learn_unknown", "ready_codec", "register_all"]
