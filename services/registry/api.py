"""The Confluent Schema Registry REST routes the confluent-kafka serdes and clients use, over the store.

Bodies, status codes and error codes follow Confluent's: `{"error_code": N, "message": "..."}` with
40401 subject / 40402 version / 40403 schema not found, 409 incompatible, 42201 invalid schema,
42202 invalid version, 42203 invalid compatibility level, 50001 store errors.
Limits add 41301 body too large, 42201 for a schema too complex, too slow to parse or that stopped
the parser, 42901 user rate, 42902 parser busy, 42903 failed logins (with `Retry-After` on 429s),
50303 parser unavailable. Submitted schemas are parsed and checked in worker processes only.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge

from liaison.errors import RegistryStoreError, SchemaError
from services.registry.auth import USER
from services.registry.compat import AvroSchema, CompatibilityLevel, CompatibilityResult
from services.registry.limits import (
    RefusalReason,
    SchemaLimits,
    SchemaTooComplex,
    check_shape,
    retry_after_s,
)
from services.registry.state import SubjectVersion
from services.registry.store import Refusal, SchemaStore, schema_not_found, subject_not_found
from services.registry.worker import (
    ParserBusy,
    ParserUnavailable,
    ParseTimeout,
    SchemaWorkers,
    WorkerRefusal,
)

log = structlog.get_logger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
BODY_TYPES = frozenset({
    CONTENT_TYPE, "application/vnd.schemaregistry+json", "application/json",
    "application/octet-stream",  # what aiohttp reports when a client sends no content type
})
MAX_VERSION = 2**31 - 1


class RegistryMetrics:
    """The registry's Prometheus metrics, on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "liaison_registry_requests", "HTTP requests answered, by route pattern and status.",
            ["endpoint", "status"], registry=registry)
        self.schemas = Gauge(
            "liaison_registry_schemas", "Distinct schema ids held by at least one subject version.",
            registry=registry)
        self.bad_records = Counter(
            "liaison_registry_bad_records", "Records of the schemas topic skipped as unreadable.",
            registry=registry)
        self.refused = Counter(
            "liaison_registry_refused", "Requests refused by a limit (size, complexity, parse time, rates).",
            ["reason"], registry=registry)
        for reason in RefusalReason:
            self.refused.labels(reason=reason.value)  # every reason shows, at 0, from the start


STORE = web.AppKey("store", SchemaStore)
METRICS = web.AppKey("metrics", RegistryMetrics)
WORKERS = web.AppKey("workers", SchemaWorkers)
LIMITS = web.AppKey("limits", SchemaLimits)


def create_app(store: SchemaStore, metrics: RegistryMetrics, workers: SchemaWorkers, limits: SchemaLimits,
               auth: Middleware | None = None) -> web.Application:
    """The aiohttp application; the store and the workers must be started before it serves."""
    # One byte over the limit, so that a body of exactly the limit is still read (aiohttp refuses at >=).
    app = web.Application(middlewares=[_guard] + ([auth] if auth else []),
                          client_max_size=limits.max_body_bytes + 1)
    app[STORE] = store
    app[METRICS] = metrics
    app[WORKERS] = workers
    app[LIMITS] = limits
    app.router.add_routes([
        web.get("/", _root),
        web.get("/schemas/types", _schema_types),
        web.get(r"/schemas/ids/{id:\d+}", _schema_by_id),
        web.get(r"/schemas/ids/{id:\d+}/schema", _schema_text_by_id),
        web.get(r"/schemas/ids/{id:\d+}/versions", _versions_by_id),
        web.get(r"/schemas/ids/{id:\d+}/subjects", _subjects_by_id),
        web.get("/subjects", _subjects),
        web.post("/subjects/{subject}", _lookup),
        web.delete("/subjects/{subject}", _delete_subject),
        web.get("/subjects/{subject}/versions", _versions),
        web.post("/subjects/{subject}/versions", _register),
        web.get("/subjects/{subject}/versions/{version}", _version),
        web.delete("/subjects/{subject}/versions/{version}", _delete_version),
        web.get("/subjects/{subject}/versions/{version}/schema", _version_schema_text),
        web.get("/subjects/{subject}/versions/{version}/referencedby", _referenced_by),
        web.post("/compatibility/subjects/{subject}/versions/{version}", _check_version),
        web.post("/compatibility/subjects/{subject}/versions", _check_all),
        web.get("/config", _global_config),
        web.put("/config", _set_global_config),
        web.delete("/config", _delete_global_config),
        web.get("/config/{subject}", _subject_config),
        web.put("/config/{subject}", _set_subject_config),
        web.delete("/config/{subject}", _delete_subject_config),
        web.get("/mode", _mode),
        web.get("/mode/{subject}", _mode),
    ])
    return app


# -- plumbing ------------------------------------------------------------------------------


def _reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type=CONTENT_TYPE, headers=headers)


def _error(status: int, error_code: int, message: str) -> web.Response:
    return _reply({"error_code": error_code, "message": message}, status)


def _worker_refusal(exc: WorkerRefusal) -> Refusal:
    """The answer to a job the schema workers refused: 422 for the schema's fault, 429 for load."""
    if isinstance(exc, ParserBusy):
        return Refusal(429, 42902, f"Too many schemas in progress: {exc}", reason=RefusalReason.PARSE_BUSY,
                       retry_after_s=exc.retry_after_s)
    reason = RefusalReason.PARSE_TIMEOUT if isinstance(exc, ParseTimeout) else RefusalReason.PARSE_CRASHED
    return Refusal(422, 42201, f"Invalid schema: {exc}; submit a smaller or simpler schema", reason=reason)


def _refused(request: web.Request, endpoint: str, refusal: Refusal) -> web.Response:
    """The error body; a limit's refusal is also counted and logged, once, without credentials."""
    headers = None
    if refusal.retry_after_s is not None:
        headers = {"Retry-After": str(retry_after_s(refusal.retry_after_s))}
    if refusal.reason is not None:
        request.app[METRICS].refused.labels(reason=refusal.reason).inc()
        log.warning("registry request refused", reason=refusal.reason, status=refusal.status,
                    error_code=refusal.error_code, method=request.method, endpoint=endpoint,
                    peer=request.remote, user=request.get(USER), detail=refusal.message,
                    retry_after=headers["Retry-After"] if headers else None)
    return _reply({"error_code": refusal.error_code, "message": refusal.message}, refusal.status, headers)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn refusals and store faults into Confluent error bodies, and count every answer."""
    resource = request.match_info.route.resource
    endpoint = resource.canonical if resource is not None else "unmatched"
    counter = request.app[METRICS].requests
    response: web.StreamResponse
    try:
        response = await handler(request)
    except Refusal as exc:
        response = _refused(request, endpoint, exc)
    except WorkerRefusal as exc:
        response = _refused(request, endpoint, _worker_refusal(exc))
    except SchemaError as exc:  # the compatibility checker itself gave up on the candidate
        response = _error(422, 42201, f"Invalid schema: the compatibility check failed: {exc}")
    except ParserUnavailable as exc:
        log.error("schema workers unavailable",  # noqa: TRY400  # a named fault of ours; no traceback needed
                  endpoint=endpoint, error=str(exc))
        response = _error(503, 50303, "Cannot parse schemas now: the schema worker does not start")
    except RegistryStoreError as exc:
        log.error("schema store fault",  # noqa: TRY400  # a named fault of ours; no traceback needed
                  endpoint=endpoint, method=request.method, error=str(exc))
        response = _error(500, 50001, f"Error in the backend data store: {exc}")
    except web.HTTPException as exc:  # the router's own 404 / 405 / 413
        response = _error(exc.status, exc.status, exc.reason)
    except Exception:
        counter.labels(endpoint=endpoint, status="500").inc()
        raise
    counter.labels(endpoint=endpoint, status=str(response.status)).inc()
    return response


def _store(request: web.Request) -> SchemaStore:
    return request.app[STORE]


def _flag(request: web.Request, name: str) -> bool:
    """Query booleans as Jersey reads them: `true` in any case, anything else is false."""
    return request.query.get(name, "").strip().lower() == "true"


def _page(items: list[Any], request: web.Request) -> list[Any]:
    """`offset` and `limit` (-1 or absent: no limit) as the Confluent client sends them."""
    try:
        offset = max(int(request.query.get("offset", "0")), 0)
        limit = int(request.query.get("limit", "-1"))
    except ValueError:
        raise Refusal(400, 400, "offset and limit must be integers") from None
    return items[offset:] if limit < 0 else items[offset:offset + limit]


def _version_number(raw: str) -> int | None:
    """A version from the path: a number in [1, 2^31-1], or `latest` / -1 (returned as None)."""
    if raw == "latest":
        return None
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if number == -1:
        return None
    if not 1 <= number <= MAX_VERSION:
        raise Refusal(422, 42202, f"The specified version '{raw}' is not a valid version id. Allowed values "
                                  f"are between [1, {MAX_VERSION}] and the string \"latest\"")
    return number


def _too_large(limit: int) -> Refusal:
    return Refusal(413, 41301, f"Request body larger than {limit} bytes; schemas this registry accepts are "
                               "far smaller", reason=RefusalReason.BODY_TOO_LARGE)


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object of a request, read only up to the size limit (refused early by Content-Length)."""
    if request.content_type not in BODY_TYPES:
        raise Refusal(415, 415, f"Unsupported content type {request.content_type!r}; "
                                f"send {CONTENT_TYPE} or application/json")
    limit = request.app[LIMITS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        raw = await request.read()  # stops reading past client_max_size (chunked bodies too)
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise Refusal(400, 400, f"Request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Refusal(422, 422, "Request body must be a JSON object")
    return data


async def _schema_from(request: web.Request, body: dict[str, Any]) -> AvroSchema:
    """The Avro schema of a register / lookup / compatibility request body, parsed in a worker.

    Its JSON's size and shape are checked here first, so an oversized document never reaches Avro.
    """
    schema_type = body.get("schemaType") or "AVRO"
    if not isinstance(schema_type, str) or schema_type.upper() != "AVRO":
        raise Refusal(422, 42201, f"Invalid schema: schemaType {schema_type!r} is not supported; "
                                  "this registry stores AVRO schemas only")
    if body.get("references"):
        raise Refusal(422, 42201, "Invalid schema: schema references are not supported by this registry")
    for unsupported in ("metadata", "ruleSet"):
        if body.get(unsupported):
            raise Refusal(422, 42201, f"Invalid schema: {unsupported} (data contracts) is not supported "
                                      "by this registry")
    text = body.get("schema")
    if not isinstance(text, str):
        raise Refusal(422, 42201, "Invalid schema: the body needs a \"schema\" string")
    try:
        document = json.loads(text)
    except RecursionError:
        raise Refusal(422, 42201, "Invalid schema: nested too deeply",
                      reason=RefusalReason.SCHEMA_TOO_COMPLEX) from None
    except ValueError as exc:
        raise Refusal(422, 42201, f"Invalid schema: schema is not JSON: {exc}") from None
    try:
        check_shape(document, request.app[LIMITS])
    except SchemaTooComplex as exc:
        raise Refusal(422, 42201, f"Invalid schema: {exc}", reason=RefusalReason.SCHEMA_TOO_COMPLEX) from None
    try:
        return await request.app[WORKERS].parse(text)
    except SchemaError as exc:
        raise Refusal(422, 42201, f"Invalid schema: {exc}") from None


def _version_body(store: SchemaStore, entry: SubjectVersion) -> dict[str, Any]:
    # schemaType is left out for AVRO, as Confluent does.
    return {"subject": entry.subject, "version": entry.version, "id": entry.schema_id,
            "schema": store.schema_of(entry).text}


def _compat_body(result: CompatibilityResult, request: web.Request) -> web.Response:
    body: dict[str, Any] = {"is_compatible": result.compatible}
    if _flag(request, "verbose"):
        body["messages"] = list(result.messages)
    return _reply(body)


def _level_from(body: dict[str, Any]) -> CompatibilityLevel:
    try:
        return CompatibilityLevel.parse(body.get("compatibility", body.get("compatibilityLevel")))
    except ValueError as exc:
        raise Refusal(422, 42203, f"Invalid compatibility level: {exc}") from None


# -- schemas by id -------------------------------------------------------------------------


async def _root(request: web.Request) -> web.Response:
    return _reply({})


async def _schema_types(request: web.Request) -> web.Response:
    return _reply(["AVRO"])


def _schema_or_404(request: web.Request) -> tuple[int, AvroSchema]:
    schema_id = int(request.match_info["id"])
    schema = _store(request).state.schema(schema_id)
    if schema is None:
        raise schema_not_found(schema_id)
    return schema_id, schema


async def _schema_by_id(request: web.Request) -> web.Response:
    # `subject`, `format` and `reference_format` change nothing for Avro without references.
    _, schema = _schema_or_404(request)
    return _reply({"schema": schema.text})


async def _schema_text_by_id(request: web.Request) -> web.Response:
    _, schema = _schema_or_404(request)
    return web.Response(text=schema.text, content_type=CONTENT_TYPE)


async def _versions_by_id(request: web.Request) -> web.Response:
    schema_id, _ = _schema_or_404(request)
    uses = _store(request).state.uses(schema_id, deleted=_flag(request, "deleted"))
    subject = request.query.get("subject")
    pairs = [{"subject": e.subject, "version": e.version} for e in uses if subject in (None, e.subject)]
    return _reply(_page(pairs, request))


async def _subjects_by_id(request: web.Request) -> web.Response:
    schema_id, _ = _schema_or_404(request)
    uses = _store(request).state.uses(schema_id, deleted=_flag(request, "deleted"))
    subject = request.query.get("subject")
    subjects = sorted({e.subject for e in uses if subject in (None, e.subject)})
    return _reply(_page(subjects, request))


# -- subjects and versions -----------------------------------------------------------------


async def _subjects(request: web.Request) -> web.Response:
    state = _store(request).state
    if _flag(request, "deleted_only"):
        live = set(state.subjects())
        subjects = [s for s in state.subjects(deleted=True) if s not in live]
    else:
        subjects = state.subjects(deleted=_flag(request, "deleted"))
    prefix = request.query.get("subjectPrefix", "")
    return _reply(_page([s for s in subjects if s.startswith(prefix)], request))


async def _register(request: web.Request) -> web.Response:
    # `normalize` is accepted and changes nothing: schemas are always identified by canonical form.
    schema = await _schema_from(request, await _body(request))
    schema_id = await _store(request).register(request.match_info["subject"], schema)
    return _reply({"id": schema_id})


async def _lookup(request: web.Request) -> web.Response:
    store = _store(request)
    schema = await _schema_from(request, await _body(request))
    entry = store.lookup(request.match_info["subject"], schema, deleted=_flag(request, "deleted"))
    return _reply(_version_body(store, entry))


async def _delete_subject(request: web.Request) -> web.Response:
    versions = await _store(request).delete_subject(
        request.match_info["subject"], permanent=_flag(request, "permanent"))
    return _reply(versions)


async def _versions(request: web.Request) -> web.Response:
    subject = request.match_info["subject"]
    deleted_only = _flag(request, "deleted_only")
    entries = _store(request).state.versions(subject, deleted=deleted_only or _flag(request, "deleted"))
    if not entries:
        raise subject_not_found(subject)
    numbers = [e.version for e in entries if e.deleted or not deleted_only]
    return _reply(_page(numbers, request))


def _entry(request: web.Request) -> SubjectVersion:
    version = _version_number(request.match_info["version"])
    return _store(request).get_version(request.match_info["subject"], version,
                                       deleted=_flag(request, "deleted"))


async def _version(request: web.Request) -> web.Response:
    return _reply(_version_body(_store(request), _entry(request)))


async def _version_schema_text(request: web.Request) -> web.Response:
    return web.Response(text=_store(request).schema_of(_entry(request)).text, content_type=CONTENT_TYPE)


async def _referenced_by(request: web.Request) -> web.Response:
    _entry(request)  # 40401 / 40402 as for the version itself
    return _reply([])  # references are not supported, so nothing refers to anything


async def _delete_version(request: web.Request) -> web.Response:
    version = _version_number(request.match_info["version"])
    deleted = await _store(request).delete_version(
        request.match_info["subject"], version, permanent=_flag(request, "permanent"))
    return _reply(deleted)


# -- compatibility and config --------------------------------------------------------------


async def _check_version(request: web.Request) -> web.Response:
    version = _version_number(request.match_info["version"])
    schema = await _schema_from(request, await _body(request))
    return _compat_body(await _store(request).check(request.match_info["subject"], schema, version), request)


async def _check_all(request: web.Request) -> web.Response:
    schema = await _schema_from(request, await _body(request))
    return _compat_body(await _store(request).check_all(request.match_info["subject"], schema), request)


async def _global_config(request: web.Request) -> web.Response:
    return _reply({"compatibilityLevel": _store(request).state.effective_global_level().value})


async def _set_global_config(request: web.Request) -> web.Response:
    level = _level_from(await _body(request))
    await _store(request).set_level(None, level)
    return _reply({"compatibility": level.value})


async def _delete_global_config(request: web.Request) -> web.Response:
    previous = await _store(request).delete_level(None)
    return _reply({"compatibilityLevel": previous.value})


async def _subject_config(request: web.Request) -> web.Response:
    subject = request.match_info["subject"]
    state = _store(request).state
    level = state.subject_level(subject)
    if level is None:
        if not _flag(request, "defaultToGlobal"):
            raise Refusal(404, 40408, f"Subject '{subject}' does not have subject-level compatibility "
                                      "configured")
        level = state.effective_global_level()
    return _reply({"compatibilityLevel": level.value})


async def _set_subject_config(request: web.Request) -> web.Response:
    level = _level_from(await _body(request))
    await _store(request).set_level(request.match_info["subject"], level)
    return _reply({"compatibility": level.value})


async def _delete_subject_config(request: web.Request) -> web.Response:
    previous = await _store(request).delete_level(request.match_info["subject"])
    return _reply({"compatibilityLevel": previous.value})


async def _mode(request: web.Request) -> web.Response:
    return _reply({"mode": "READWRITE"})
