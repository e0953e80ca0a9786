"""`dfhost instances ...` against the task hub directly: with a host running (woken by the
store), without one, with the HTTP API's JSON shapes, and with one-line errors."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dfhost.cli.main import main
from dfhost.store import open_store

from .conftest import BASE, OPS_APP, OpsHost, copy_ops_app, run_cli, status_of, wait_http

pytestmark = pytest.mark.e2e


class Cli:
    """`dfhost instances ...` in this process, against one store."""

    def __init__(self, store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any):
        self.store_url = store_url
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def __call__(self, *args: str, stdin: str = "", app: Path = OPS_APP) -> tuple[int, str, str]:
        self.capsys.readouterr()
        self.monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(["instances", *args, "--store", self.store_url, "--app", str(app)])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def ok(self, *args: str, stdin: str = "") -> str:
        code, out, err = self(*args, stdin=stdin)
        assert code == 0, err
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def fails(self, *args: str, stdin: str = "") -> str:
        """The error line of a command that must fail (after a question, if it asked one)."""
        code, _, err = self(*args, stdin=stdin)
        assert code == 1
        if stdin:
            question, err = err.split("\n", 1)
            assert question.endswith("[y/N] "), question
        assert err.startswith("dfhost: ") and err.count("\n") == 1, err
        assert "Traceback" not in err
        return err


@pytest.fixture
def hub_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.sqlite3'}"


@pytest.fixture
def cli(hub_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> Cli:
    return Cli(hub_url, capsys, monkeypatch)


@pytest.fixture
def host(hub_url: str, state: Path) -> Iterator[OpsHost]:
    running = OpsHost(OPS_APP, hub_url, state).start()
    yield running
    (state / "open-all").touch()
    running.stop()


def test_every_command_against_a_running_host(cli: Cli, host: OpsHost, state: Path) -> None:
    # The host sleeps with nothing to do: only the store's wake-up makes it pick this up.
    assert cli.ok("start", "waiter", "--id", "w1") == "Started 'waiter' as 'w1'.\n"
    wait_http(host, "w1", "Running", within=5)
    cli.ok("suspend", "w1", "--reason", "look at it")
    wait_http(host, "w1", "Suspended", within=5)
    assert cli.ok("raise", "w1", "Go", '{"a": 1}') == "Raised 'Go' for 'w1'.\n"
    assert status_of(host, "w1")["runtimeStatus"] == "Suspended"
    cli.ok("resume", "w1")
    assert wait_http(host, "w1", "Completed", within=5)["output"] == {"a": 1}

    # --json is the HTTP API's shape.
    shown = cli.json("show", "w1", "--history")
    api = status_of(host, "w1", query="?showHistory=true&showHistoryOutput=true")
    assert shown == api
    assert [e["EventType"] for e in shown["historyEvents"]][-2:] == [
        "EventRaised",
        "ExecutionCompleted",
    ]
    assert (
        cli.json("list", "--name", "waiter")
        == httpx.get(f"{host.origin}{BASE}/instances?name=waiter").json()
    )
    table = cli.ok("list")
    header = ["INSTANCE", "ID", "NAME", "STATUS", "CREATED", "LAST", "UPDATED"]
    assert table.splitlines()[0].split() == header
    assert table.splitlines()[1].split()[:3] == ["w1", "waiter", "Completed"]
    details = cli.ok("show", "w1", "--history")
    assert "Status:        Completed" in details and "EventRaised" in details

    # Rewind and restart.
    (state / "broken-cli").touch()
    cli.ok("start", "steps", "--id", "s1", "--input", '"cli"')
    wait_http(host, "s1", "Failed")
    (state / "broken-cli").unlink()
    assert cli.ok("rewind", "s1", "--reason", "fixed") == "Requested rewind of 's1'.\n"
    assert wait_http(host, "s1", "Completed")["output"] == [2, "cli ok", 4]
    restarted = cli.json("restart", "s1")
    assert restarted["instanceId"] == "s1" and restarted["runtimeStatus"] == "Pending"
    wait_http(host, "s1", "Completed")
    renamed = cli.ok("restart", "s1", "--new-id")
    new_id = renamed.split("'")[-2]
    assert new_id != "s1"
    assert wait_http(host, new_id, "Completed")["input"] == "cli"

    # Terminate (no replay needed), then purge with and without confirmation.
    cli.ok("start", "waiter", "--id", "w2")
    wait_http(host, "w2", "Running")
    cli.ok("terminate", "w2", "--reason", "enough")
    assert wait_http(host, "w2", "Terminated", within=5)["output"] == "enough"
    assert "purge cancelled" in cli.fails("purge", "w2", stdin="n\n")
    assert cli.ok("purge", "w2", stdin="y\n") == "Purged 1 instance(s).\n"
    assert status_of(host, "w2") == {}
    assert cli.ok("purge", "--name", "steps", "--yes") == "Purged 2 instance(s).\n"
    assert cli.json("purge", "--status", "Completed", "--yes") == {"instancesDeleted": 1}
    assert cli.json("list") == []

    # Errors: one line, exit 1.
    for command in ("show", "terminate", "suspend", "resume", "rewind", "restart", "purge"):
        assert cli.fails(command, "nope") == "dfhost: no instance with ID 'nope'\n", command
    assert cli.fails("raise", "nope", "Go") == "dfhost: no instance with ID 'nope'\n"
    cli.ok("start", "echo", "--id", "e1", "--input", "1")
    wait_http(host, "e1", "Completed")
    for command in ("terminate", "suspend", "resume"):
        assert f"'e1' has finished, so it cannot {command}" in cli.fails(command, "e1")
    assert "has finished" in cli.fails("raise", "e1", "Go")
    assert "only Failed ones" in cli.fails("rewind", "e1")
    assert "not valid JSON" in cli.fails("raise", "e1", "Go", "{bad")
    assert "not valid JSON" in cli.fails("start", "echo", "--input", "{bad")
    assert "doesn't exist" in cli.fails("start", "no_such_orchestrator")
    assert "is not one of" in cli.fails("list", "--status", "Bogus")
    assert "needs an instance ID or a filter" in cli.fails("purge", "--yes")
    assert "not an ISO 8601" in cli.fails("list", "--created-from", "yesterday")
    cli.ok("start", "waiter", "--id", "w3")
    wait_http(host, "w3", "Running")
    assert "Terminate it first, or use --new-id" in cli.fails("restart", "w3")


def test_commands_queue_work_when_no_host_runs(
    cli: Cli, hub_url: str, state: Path, tmp_path: Path
) -> None:
    assert "no task hub at" in cli.fails("list")

    async def create_hub() -> None:
        store = open_store(hub_url)
        await store.start()
        await store.close()

    asyncio.run(create_hub())
    cli.ok("start", "waiter", "--id", "queued")
    cli.ok("start", "echo", "--id", "echoed", "--input", '"hi"')
    cli.ok("terminate", "queued", "--reason", "never mind")
    assert [i["runtimeStatus"] for i in cli.json("list")] == ["Pending", "Pending"]

    host = OpsHost(OPS_APP, hub_url, state).start()
    try:
        assert wait_http(host, "queued", "Terminated")["output"] == "never mind"
        assert wait_http(host, "echoed", "Completed")["output"] == "hi"
    finally:
        host.stop()
    assert cli.json("show", "queued")["runtimeStatus"] == "Terminated"


def test_errors_in_a_subprocess_are_one_line(hub_url: str, tmp_path: Path) -> None:
    missing = run_cli("instances", "show", "x", "--store", hub_url)
    assert missing.returncode == 1
    assert missing.stderr.startswith("dfhost: no task hub at ")
    assert "Traceback" not in missing.stderr and missing.stderr.count("\n") == 1

    bad_url = run_cli("instances", "list", "--store", "mysql://x")
    assert bad_url.returncode == 1
    assert "unsupported store URL" in bad_url.stderr

    usage = run_cli("instances")
    assert usage.returncode == 2
    assert "COMMAND" in usage.stderr


@pytest.mark.slow
def test_an_orphan_is_reported_at_startup_then_terminated_and_purged(
    cli: Cli, hub_url: str, state: Path, tmp_path: Path
) -> None:
    app_dir = copy_ops_app(tmp_path / "app")
    host = OpsHost(app_dir, hub_url, state).start()
    try:
        cli.ok("start", "waiter", "--id", "old-loop")
        wait_http(host, "old-loop", "Running")
    finally:
        host.stop()
    code = app_dir / "function_app.py"
    code.write_text(code.read_text().replace("def waiter(", "def renamed_waiter("))

    host = OpsHost(app_dir, hub_url, state).start()
    try:
        orphans = [line for line in host.lines if "orphaned instance" in line]
        assert len(orphans) == 1, host.output
        assert "'old-loop' (Running): its orchestrator 'waiter' is not in this app" in orphans[0]
        cli.ok("terminate", "old-loop", "--reason", "renamed")
        assert wait_http(host, "old-loop", "Terminated", within=5)["output"] == "renamed"
        cli.ok("purge", "old-loop", "--yes")
        assert status_of(host, "old-loop") == {}
    finally:
        host.stop()
    assert "Traceback" not in host.output


def test_commands_open_the_hub_dfhost_start_would(tmp_path: Path) -> None:
    from dfhost.cli.common import CommandError, command_store_url

    app = tmp_path / "app"
    app.mkdir()
    (app / "host.json").write_text(
        '{"version": "2.0", "extensions": {"durableTask": {"hubName": "Orders"}}}'
    )
    pg = "postgresql://postgres@127.0.0.1:5432/db"
    assert command_store_url(app, pg) == f"{pg}?hub=Orders"
    assert command_store_url(app, f"{pg}?hub=Other") == f"{pg}?hub=Other"
    assert command_store_url(app, None) == f"sqlite:///{app / '.dfhost' / 'taskhub.sqlite3'}"
    assert command_store_url(tmp_path / "missing", pg) == pg
    with pytest.raises(CommandError, match="no function app"):
        command_store_url(tmp_path / "missing", None)
