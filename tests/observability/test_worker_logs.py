"""Records of a worker process (`ForwardingHandler`) logged again by the host (`reemit`): the
same line as if the host had run the function, with its tag, its escaped arguments and its
traceback; replayed orchestrator lines follow the host's rules."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from dfhost.logs import (
    ForwardingHandler,
    Invocation,
    configure_console,
    invocation,
    keep_instance_logs,
    reemit,
)


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    try:
        yield stream
    finally:
        configure_console(stream=io.StringIO())
        root = logging.getLogger()
        root.handlers[:] = [h for h in root.handlers if not getattr(h, "_dfhost", False)]


def _forwarded(log: logging.Logger, emit: Callable[[], None]) -> list[dict[str, object]]:
    """What a worker's handler sends while `emit` logs through `log` (no other handler)."""
    sent: list[dict[str, object]] = []
    handler = ForwardingHandler(sent.append)
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)  # as a worker's root logger is
    try:
        emit()
    finally:
        log.removeHandler(handler)
        log.propagate = True
        log.setLevel(logging.NOTSET)
    # What travels is plain data: it survives a JSON round trip.
    return [json.loads(json.dumps(record)) for record in sent]


def test_a_forwarded_record_reads_as_the_hosts_own(console: io.StringIO) -> None:
    log = logging.getLogger("function.forwarded")

    def emit() -> None:
        with invocation(Invocation("resize", id="inv-1", instance_id="i1")):
            log.info("resizing %s", "a\x1b[31mb")
            try:
                raise ValueError("too big")
            except ValueError:
                log.exception("failed")

    records = _forwarded(log, emit)
    configure_console(stream=console)
    for record in records:
        reemit(record)
    lines = console.getvalue().splitlines()
    assert lines[0].endswith("resize (i1): resizing a\\x1b[31mb")
    assert lines[1].endswith("resize (i1): failed")
    assert lines[2] == " Traceback (most recent call last):"
    assert "ValueError: too big" in lines[-1]


def test_json_lines_keep_the_invocation_fields(console: io.StringIO) -> None:
    log = logging.getLogger("function.forwarded")

    def emit() -> None:
        inv = Invocation("orch", id="inv-2", instance_id="i2", execution_id="e2", episode=3)
        inv.replaying = lambda: True
        with invocation(inv):
            log.info("replayed line")

    [record] = _forwarded(log, emit)
    configure_console(stream=console, log_format="json")
    reemit(record)
    line = json.loads(console.getvalue())
    assert line["message"] == "replayed line"
    assert (line["function"], line["invocationId"], line["instanceId"]) == ("orch", "inv-2", "i2")
    assert (line["executionId"], line["episode"], line["replay"]) == ("e2", 3, True)


def test_replayed_lines_are_dropped_on_the_console_and_kept_per_instance_when_live(
    console: io.StringIO,
) -> None:
    log = logging.getLogger("function.forwarded")
    lines = keep_instance_logs()

    def emit() -> None:
        replaying = Invocation("orch", instance_id="i3", replaying=lambda: True)
        with invocation(replaying):
            log.info("old news")
        with invocation(Invocation("orch", instance_id="i3")):
            log.info("new news")

    records = _forwarded(log, emit)
    configure_console(stream=console)
    for record in records:
        reemit(record)
    assert "old news" not in console.getvalue()
    assert console.getvalue().rstrip().endswith("orch (i3): new news")
    assert [line.message for line in lines.lines("i3")] == ["new news"]


def test_a_level_the_host_does_not_log_is_dropped(console: io.StringIO) -> None:
    log = logging.getLogger("function.forwarded")
    records = _forwarded(log, lambda: log.warning("quiet"))
    configure_console(stream=console, level=logging.ERROR)
    reemit(records[0])
    assert console.getvalue() == ""
