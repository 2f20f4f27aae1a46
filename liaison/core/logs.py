"""structlog configured once, in the entry point: JSON off a TTY, readable lines on one.

Standard-library log records (aiokafka, aiohttp) go through the same renderer, so a service's
log is one JSON object per line whatever library wrote it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
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
    handler.addFilter(RepeatLimit())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name,
                           structlog.stdlib.ExtraAdder(allow=["repeated"])],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries' own chatter (retries, reconnects) only from WARNING up.
    root.setLevel(max(numeric, logging.WARNING))


class RepeatLimit(logging.Filter):
    """A library's line said again within `window_s` is counted, not written.

    While a broker is down, aiokafka reports each failed reconnect (ten a second per client); an
    outage of an hour would otherwise fill the disk with one line. The next line let through
    carries how many were held back (`repeated`).
    """

    def __init__(self, window_s: float = 30.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        last, held = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.window_s:
            self._seen[key] = (last, held + 1)
            return False
        if len(self._seen) > 1000:  # distinct lines are few; this only bounds a pathological case
            self._seen.clear()
        self._seen[key] = (now, 0)
        if held:
            record.repeated = held
        return True


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
