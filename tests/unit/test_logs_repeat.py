"""A library's repeated log line is held back for a while, and the next one says how many were."""

from __future__ import annotations

import logging

from liaison.core.logs import RepeatLimit


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, args, None)


def test_a_line_repeated_within_the_window_is_counted_and_reported_with_the_next() -> None:
    now = [0.0]
    limit = RepeatLimit(30.0, clock=lambda: now[0])
    unable = "Unable connect to node with id %s: %s"
    assert limit.filter(_record(unable, 1, "refused"))
    held = [limit.filter(_record(unable, n, "refused")) for n in range(100)]  # other nodes: the same line
    assert not any(held)
    assert limit.filter(_record("Failed fetch messages from %s", 1))  # another line passes at once
    now[0] = 30.0
    first_after = _record(unable, 1, "refused")
    assert limit.filter(first_after)
    assert first_after.repeated == 100  # type: ignore[attr-defined]
    now[0] = 31.0
    assert not limit.filter(_record(unable, 2, "refused"))
