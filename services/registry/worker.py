"""Parsing and checking submitted schemas in worker processes, with a time limit, off the event loop.

The Avro library is pure Python and quadratic in places: a crafted schema can hold the GIL for
minutes, so threads would still starve the event loop, and a thread cannot be stopped. A worker
process can: one that overruns the time limit is killed and replaced, and the request gets a refusal.
Jobs wait for a free worker (up to twice the time limit); past `max_pending` jobs running or waiting,
they are refused at once.

Parent and worker speak length-prefixed pickles over the worker's stdin and stdout; the worker is
this module run as `python -m services.registry.worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import struct
import sys
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from liaison.core.lifecycle import AsyncResource
from liaison.errors import SchemaError
from services.registry.compat import (
    AvroSchema,
    CompatibilityLevel,
    CompatibilityResult,
    check_compatibility,
    parse_schema,
)

log = structlog.get_logger(__name__)

_HEADER = struct.Struct(">I")
_MAX_FRAME = 256 * 1024 * 1024  # a parsed schema pickles to a few times its text; more is a broken worker
_SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the `services` package


class WorkerRefusal(Exception):
    """A job the workers would not or could not finish; the request is refused, not failed."""


class ParseTimeout(WorkerRefusal):
    """The job ran past the time limit; its worker was killed."""


class ParseCrashed(WorkerRefusal):
    """The worker died during the job (out of memory, a crash in the parser); it is replaced."""


class ParserBusy(WorkerRefusal):
    """Too many jobs running or waiting; the client may retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ParserUnavailable(Exception):
    """A worker process could not be started: a fault of the registry, not of the request."""


class _Worker:
    """One worker process, started lazily and replaced after a job it did not finish."""

    def __init__(self, start_timeout_s: float) -> None:
        self.start_timeout_s = start_timeout_s
        self._process: asyncio.subprocess.Process | None = None
        self._ready = False

    async def spawn(self) -> asyncio.subprocess.Process:
        """Start the process unless it runs; its imports go on while the service starts."""
        process = self._process
        if process is not None and process.returncode is None:
            return process
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_SOURCE_ROOT), env.get("PYTHONPATH")]))
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.registry.worker", env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise ParserUnavailable(f"cannot start a schema worker: {exc}") from exc
        self._process, self._ready = process, False
        return process

    async def _ensure_ready(self) -> asyncio.subprocess.Process:
        """A started worker that has imported the parser (start-up time never counts against a job)."""
        process = await self.spawn()
        if self._ready:
            return process
        problem = "no answer"
        try:
            async with asyncio.timeout(self.start_timeout_s):
                status, _ = await _read_frame(process)
            self._ready = status == "ready"
            problem = f"it said {status!r}"
        except (TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            problem = repr(exc)
        finally:
            if not self._ready:
                await asyncio.shield(self.kill())
        if not self._ready:
            raise ParserUnavailable(f"schema worker did not start: {problem}")
        return process

    async def call(self, request: tuple[str, tuple[Any, ...]], timeout_s: float) -> Any:
        """Run one job; a worker that overruns, dies or is interrupted is killed, never reused."""
        process = await self._ensure_ready()
        assert process.stdin is not None  # started with pipes; narrows the type
        finished = False
        try:
            async with asyncio.timeout(timeout_s):
                process.stdin.write(_frame(request))
                await process.stdin.drain()
                status, value = await _read_frame(process)
            finished = True
        except TimeoutError:
            raise ParseTimeout(f"parsing and checking the schema took longer than {timeout_s:g} s") from None
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            raise ParseCrashed(f"the schema worker stopped during the job ({type(exc).__name__})") from None
        finally:
            if not finished:
                await asyncio.shield(self.kill())
        if status != "ok":
            raise SchemaError(str(value))
        return value

    async def kill(self) -> None:
        """Stop the process now; safe to call twice. The next job starts a new one."""
        process, self._process, self._ready = self._process, None, False
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await process.wait()


class SchemaWorkers(AsyncResource):
    """A few worker processes: parse a submitted schema, or check one for compatibility, within a limit."""

    def __init__(self, *, workers: int = 1, timeout_s: float = 5.0, max_pending: int = 16,
                 start_timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.max_pending = max(max_pending, workers)
        self._workers = [_Worker(start_timeout_s) for _ in range(workers)]
        self._idle: asyncio.Queue[_Worker] | None = None
        self._pending = 0
        self._running = 0

    @property
    def running(self) -> int:
        """Jobs inside a worker right now."""
        return self._running

    @property
    def pending(self) -> int:
        """Jobs running or waiting for a worker."""
        return self._pending

    async def start(self) -> None:
        """Start the worker processes; safe to call twice.

        Raises:
            ParserUnavailable: a process could not be started.
        """
        if self._idle is not None:
            return
        try:
            for worker in self._workers:
                await worker.spawn()
        except BaseException:
            await self.stop()
            raise
        self._idle = asyncio.Queue()
        for worker in self._workers:
            self._idle.put_nowait(worker)

    async def stop(self) -> None:
        """Kill every worker process; jobs still running end with ParseCrashed. Safe to call twice."""
        self._idle = None
        await asyncio.gather(*(worker.kill() for worker in self._workers))

    async def parse(self, text: str) -> AvroSchema:
        """Parse a submitted schema as `compat.parse_schema` would, off the event loop.

        Raises:
            SchemaError: the text is not a valid Avro schema.
            WorkerRefusal: too slow, crashed the worker, or too many jobs already.
            ParserUnavailable: no worker process could be started.
        """
        parsed: AvroSchema = await self._run(("parse", (text,)))
        return parsed

    async def check(self, level: CompatibilityLevel, candidate: AvroSchema,
                    existing: Mapping[int, AvroSchema]) -> CompatibilityResult:
        """`compat.check_compatibility`, off the event loop; raises as `parse` does."""
        if level is CompatibilityLevel.NONE or not existing:
            return CompatibilityResult(compatible=True)
        texts = {version: schema.text for version, schema in existing.items()}
        result: CompatibilityResult = await self._run(("check", (level.value, candidate.text, texts)))
        return result

    async def _run(self, request: tuple[str, tuple[Any, ...]]) -> Any:
        idle = self._idle
        if idle is None:
            raise ParserUnavailable("schema workers not started")
        if self._pending >= self.max_pending:
            raise ParserBusy(f"{self._pending} schemas are being parsed or checked already; retry later",
                             self.timeout_s)
        self._pending += 1
        try:
            wait_s = 2 * self.timeout_s  # long enough for the job ahead to finish or be stopped
            try:
                async with asyncio.timeout(wait_s):
                    worker = await idle.get()
            except TimeoutError:
                raise ParserBusy(f"no schema worker became free within {wait_s:g} s; retry later",
                                 self.timeout_s) from None
            self._running += 1
            try:
                return await worker.call(request, self.timeout_s)
            finally:
                self._running -= 1
                idle.put_nowait(worker)
        finally:
            self._pending -= 1


# -- the wire ------------------------------------------------------------------------------


def _frame(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


async def _read_frame(process: asyncio.subprocess.Process) -> tuple[str, Any]:
    """One (status, value) message from the worker; ValueError for one that cannot be ours."""
    assert process.stdout is not None  # started with pipes; narrows the type
    (size,) = _HEADER.unpack(await process.stdout.readexactly(_HEADER.size))
    if size > _MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    # Our own child process, running our own code, is the only writer of this pipe.
    message = pickle.loads(await process.stdout.readexactly(size))  # noqa: S301
    if not (isinstance(message, tuple) and len(message) == 2 and isinstance(message[0], str)):
        raise ValueError("malformed frame")
    return message[0], message[1]


# -- the worker process --------------------------------------------------------------------

_CACHE_BYTES = 4 * 1024 * 1024  # registered schemas are checked against again and again


class _ParsedCache:
    """Recently parsed schema texts, bounded by their total size."""

    def __init__(self, budget: int = _CACHE_BYTES) -> None:
        self.budget = budget
        self._entries: OrderedDict[str, AvroSchema] = OrderedDict()
        self._size = 0

    def parse(self, text: str) -> AvroSchema:
        found = self._entries.get(text)
        if found is not None:
            self._entries.move_to_end(text)
            return found
        schema = parse_schema(text)
        self._entries[text] = schema
        self._size += len(text)
        while self._size > self.budget and len(self._entries) > 1:
            old, _ = self._entries.popitem(last=False)
            self._size -= len(old)
        return schema


def _answer(request: Any, cache: _ParsedCache) -> tuple[str, Any]:
    op = "?"
    try:
        op, args = request
        if op == "parse":
            (text,) = args
            return "ok", cache.parse(text)
        if op == "check":
            level, candidate, existing = args
            old = {version: cache.parse(text) for version, text in existing.items()}
            return "ok", check_compatibility(CompatibilityLevel(level), cache.parse(candidate), old)
    except SchemaError as exc:
        return "invalid", str(exc)
    except Exception as exc:  # noqa: BLE001  # the input is untrusted: whatever the parser raises, it refused it
        return "invalid", f"invalid Avro schema: {type(exc).__name__}: {exc}"
    return "invalid", f"unknown worker request {op!r}"


def _write(out: BinaryIO, message: tuple[str, Any]) -> None:
    out.write(_frame(message))
    out.flush()


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """The worker's loop: answer requests until the parent closes the pipe."""
    cache = _ParsedCache()
    _write(out, ("ready", None))
    while header := inp.read(_HEADER.size):
        (size,) = _HEADER.unpack(header)
        request = pickle.loads(inp.read(size))  # noqa: S301  # written by the parent process only
        _write(out, _answer(request, cache))


if __name__ == "__main__":
    # The parent stops its workers; Ctrl-C in a terminal reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    protocol_out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print can never corrupt the protocol
    serve(sys.stdin.buffer, protocol_out)
