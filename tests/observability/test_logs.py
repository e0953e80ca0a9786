"""Log lines: with `--log-format json` every line a host writes is one JSON object, and the
Executing/Executed records carry the function, instance and invocation (and the duration and
outcome) as fields; in both formats the values a message is formatted with have their control
characters escaped, and a caller's newline cannot forge a line (issue 21, items 9 and 12)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dfhost.logs import Invocation, configure_console, invocation, log_invocation
from tests.e2e.harness import HostProcess
from tests.observability.conftest import APP
from tests.waiting import eventually_blocking

FORGED = "x'\n[2026-01-01T00:00:00.000Z] dfhost: forged line"
BASE = "/runtime/webhooks/durabletask"


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """Where the console handler writes, in the format the test configures."""
    stream = io.StringIO()
    try:
        yield stream
    finally:
        configure_console(stream=io.StringIO())  # console mode again: prints not routed
        root = logging.getLogger()
        root.handlers[:] = [h for h in root.handlers if not getattr(h, "_dfhost", False)]


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_logged_values_cannot_forge_lines_or_drive_the_terminal(
    console: io.StringIO, log_format: str
) -> None:
    configure_console(stream=console, log_format=log_format)
    host = logging.getLogger("dfhost")
    host.info("dfhost: dashboard: Raised event '%s' on 'i1'.", FORGED)
    host.info(
        "colour %s, return %s, tab %s, separator %r", "\x1b[31mred", "a\rb", "a\tb", "a\u2028b"
    )
    host.info("mapping %(name)s", {"name": "\x9b2J"})
    host.info("numbers %d of %.1f", 3, 2.5)
    with invocation(Invocation("fn", instance_id="i1")):
        logging.getLogger("function").warning("user value %s", "a\nb")
    lines = console.getvalue().splitlines()
    if log_format == "json":
        assert len(lines) == 5, lines
        messages = [json.loads(line)["message"] for line in lines]
        assert messages[0] == f"dfhost: dashboard: Raised event '{FORGED}' on 'i1'."
        assert messages[4] == "user value a\nb"
    else:
        # A line that does not start with white space is a record's first line: the forged
        # one is a continuation of the record that logged it.
        records = [line for line in lines if not line[:1].isspace()]
        assert len(records) == 5 and all(line.startswith("[") for line in records), lines
        assert lines[1] == " [2026-01-01T00:00:00.000Z] dfhost: forged line' on 'i1'."
        assert lines[-1] == " b"
        messages = records
    assert "\\x1b[31mred" in messages[1] and "a\\rb" in messages[1]
    assert "a\tb" in messages[1] and "a\\u2028b" in messages[1]
    assert messages[2].endswith("mapping \\x9b2J")
    assert messages[3].endswith("numbers 3 of 2.5")


def test_executing_and_executed_records_carry_fields(console: io.StringIO) -> None:
    configure_console(stream=console, log_format="json")
    inv = Invocation("double", instance_id="i1", execution_id="e1")
    with log_invocation(inv, "(null)"):
        pass
    failing = Invocation("flaky", instance_id="i2")
    with pytest.raises(RuntimeError), log_invocation(failing, "(null)"):
        raise RuntimeError("boom")
    executing, executed, _, failed = (json.loads(line) for line in console.getvalue().splitlines())
    for record in (executing, executed):
        assert record["function"] == "double" and record["instanceId"] == "i1"
        assert record["invocationId"] == inv.id and record["executionId"] == "e1"
    assert "durationMs" not in executing
    assert isinstance(executed["durationMs"], int) and executed["succeeded"] is True
    assert failed["succeeded"] is False and failed["instanceId"] == "i2"


def test_console_lines_stay_as_core_tools_prints_them(console: io.StringIO) -> None:
    configure_console(stream=console)
    with log_invocation(Invocation("double", instance_id="i1"), "(null)"):
        pass
    executing, executed = console.getvalue().splitlines()
    assert executing.split("] ", 1)[1].startswith("Executing 'Functions.double' (Reason='(null)'")
    assert executed.split("] ", 1)[1].startswith("Executed 'Functions.double' (Succeeded, Id=")


@pytest.mark.e2e
def test_every_line_of_a_host_with_json_logs_is_json(tmp_path: Path) -> None:
    host = HostProcess(
        APP,
        f"sqlite:///{tmp_path / 'hub.sqlite3'}",
        extra=("--log-format", "json", "--require-keys"),
    )
    host.start()
    host.origin = host.origin.split('"')[0]  # found inside a JSON line
    try:
        keys = json.loads((tmp_path / "keys.json").read_text())
        headers = {"x-functions-key": keys["masterKey"]}
        with httpx.Client(base_url=host.origin, headers=headers) as http:
            started = http.post(f"{BASE}/orchestrators/chain/c1")
            assert started.status_code == 202, started.text

            def status() -> Any:
                return http.get(f"{BASE}/instances/c1").json()["runtimeStatus"]

            eventually_blocking(status, lambda s: s == "Completed", timeout=30)
    finally:
        host.stop()
    records = []
    for line in host.lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n{host.output}")
    assert all(isinstance(r, dict) for r in records)
    banner = next(r for r in records if "functions" in r)
    assert {"name": "chain", "trigger": "orchestrationTrigger"} in banner["functions"]
    created = next(r for r in records if "keys" in r)
    assert created["keys"]["master key"] == keys["masterKey"]
    executed = [r for r in records if r["message"].startswith("Executed 'Functions.double'")]
    assert len(executed) == 3
    for record in executed:
        assert record["function"] == "double" and record["instanceId"] == "c1"
        assert record["succeeded"] is True and isinstance(record["durationMs"], int)
        assert record["invocationId"]
