"""The in-memory log lines per instance that the instance page shows."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from dfhost.logs import InstanceLogs, Invocation, invocation, keep_instance_logs


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.dashboard.ring")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    logger.handlers.clear()


def test_lines_are_kept_per_instance_and_replays_dropped(logger: logging.Logger) -> None:
    ring = InstanceLogs()
    logger.addHandler(ring)
    replaying = True
    orchestrator = Invocation(function="orch", instance_id="i1", replaying=lambda: replaying)
    with invocation(orchestrator):
        logger.info("first pass")  # replayed: already logged in an earlier episode
        replaying = False
        logger.warning("new %s", "work")
    with invocation(Invocation(function="act", instance_id="i1")):
        try:
            raise ValueError("bad")
        except ValueError:
            logger.exception("failed")
    with invocation(Invocation(function="http")):  # no instance: not kept
        logger.info("request")
    logger.info("host line")
    lines = ring.lines("i1")
    assert [(line.function, line.level, line.message.splitlines()[0]) for line in lines] == [
        ("orch", "WARNING", "new work"),
        ("act", "ERROR", "failed"),
    ]
    assert "ValueError: bad" in lines[1].message
    assert ring.lines("other") == []


def test_memory_is_bounded(logger: logging.Logger) -> None:
    ring = InstanceLogs(per_instance=2, instances=2)
    logger.addHandler(ring)
    for instance_id in ("a", "b", "a", "c"):
        with invocation(Invocation(function="f", instance_id=instance_id)):
            for n in range(3):
                logger.info("%s%d", instance_id, n)
    assert ring.lines("b") == []  # the instance that logged least recently went
    assert [line.message for line in ring.lines("a")] == ["a1", "a2"]
    assert [line.message for line in ring.lines("c")] == ["c1", "c2"]
    long = "x" * 10_000
    with invocation(Invocation(function="f", instance_id="c")):
        logger.info(long)
    assert len(ring.lines("c")[-1].message) == InstanceLogs.MAX_MESSAGE


def test_the_process_has_one_ring() -> None:
    assert keep_instance_logs() is keep_instance_logs()
