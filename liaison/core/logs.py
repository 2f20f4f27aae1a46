"""structlog configured once, in the entry point: JSON off a TTY, readable lines on one.

Standard-library log records (aiokafka, aiohttp) go through the same renderer, so a service's
log is one JSON object per line whatever library wrote it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import structlog


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    use_json = (not sys.stderr.isatty()) if json is None else json
    numeric = logging.getLevelName(level.upper())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(),
                    structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries' own chatter (retries, reconnects) only from WARNING up.
    root.setLevel(max(numeric, logging.WARNING))


@contextmanager
def kafka_client_logs_silenced() -> Iterator[None]:
    """Silence aiokafka while refusals or failed connections are expected and reported by the caller.

    Its records come from child loggers (`aiokafka.client`, `aiokafka.conn`, ...), which a level on
    the parent reaches; `Logger.disabled` would not.
    """
    logger = logging.getLogger("aiokafka")
    was = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(was)
