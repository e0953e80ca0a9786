"""`dfhost replay`, `dfhost history export` and `replay_history`: recorded histories replayed
against changed code, before it is deployed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dfhost.cli.main import main
from dfhost.testing import HISTORY_FORMAT, TestHost, replay_history
from tests.testing.conftest import V1, V2, WAITING

GOLDEN = Path(__file__).resolve().parent / "golden"
BREAKING = ("renamed", "timer_instead", "input_kind", "fewer_tasks", "timer_then_wait")


async def dfhost(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the `dfhost` command in-process (it runs its own event loop, so in a thread)."""
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def test_replay_flags_each_changed_orchestrator(
    hub: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await dfhost(capsys, "replay", "--store", hub, str(V2))
    assert code == 1, err
    lines = out.splitlines()
    assert lines[-1] == "7 instance(s) replayed, 5 would break with this code."
    verdicts = {line.split()[1]: line for line in lines if line.startswith(("ok", "BREAKS"))}
    assert sorted(verdicts) == sorted(WAITING)
    for name in BREAKING:
        assert verdicts[name].startswith(
            f"BREAKS {name} ({name}, Running): NonDeterministicOrchestrationError: "
            f"instance '{name}', task "
        ), verdicts[name]
    assert verdicts["steady"] == "ok     steady (steady, Running)"
    assert verdicts["input_value"] == "ok     input_value (input_value, Running)"
    # Same kind, other value: replays, with a warning under its line.
    warning = lines[lines.index(verdicts["input_value"]) + 1]
    assert warning.startswith("       warning: orchestrator 'input_value' (instance ")

    code, out, _ = await dfhost(capsys, "replay", "--store", hub, str(V1))
    assert (code, out.splitlines()[-1]) == (0, "7 instance(s) replayed, 0 would break.")


async def test_replay_one_instance_or_one_orchestrator(
    hub: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await dfhost(capsys, "replay", "--store", hub, "--name", "renamed", str(V2))
    assert code == 1
    assert [line.split()[1] for line in out.splitlines()[:-1]] == ["renamed"]
    code, out, _ = await dfhost(capsys, "replay", "--store", hub, "--instance", "steady", str(V2))
    assert (code, out.splitlines()) == (
        0,
        ["ok     steady (steady, Running)", "1 instance(s) replayed, 0 would break."],
    )


async def test_finished_instances_are_replayed_with_all(
    hub: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with TestHost(V1, store_url=hub) as host:
        await host.client.raise_event("steady", "go")
        await host.wait("steady")
    code, out, _ = await dfhost(capsys, "replay", "--store", hub, "--name", "steady", str(V2))
    assert (code, out.splitlines()) == (0, ["0 instance(s) replayed, 0 would break."])
    code, out, _ = await dfhost(
        capsys, "replay", "--store", hub, "--name", "steady", "--all", str(V2)
    )
    assert (code, out.splitlines()[0]) == (0, "ok     steady (steady, Completed)")


async def test_replay_errors_are_one_line(
    hub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await dfhost(capsys, "replay", "--store", hub, "--instance", "nope", str(V2))
    assert (code, out) == (2, "")
    assert err.startswith("dfhost: no instance 'nope' in sqlite:///") and err.count("\n") == 1
    code, _, err = await dfhost(capsys, "replay", "--store", hub, str(tmp_path / "missing"))
    assert code == 2
    assert err.startswith("dfhost: function app folder") and "does not exist" in err
    code, _, err = await dfhost(capsys, "history", "export", "nope", "--store", hub)
    assert (code, err.count("\n")) == (2, 1)


async def test_an_exported_history_replays_against_either_version(
    hub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await dfhost(capsys, "history", "export", "renamed", "--store", hub)
    assert code == 0
    document = json.loads(out)
    assert (document["format"], document["instanceId"]) == (HISTORY_FORMAT, "renamed")
    file = tmp_path / "renamed.json"
    file.write_text(out)

    assert replay_history(V1, file).ok
    report = replay_history(V2, file)
    assert not report.ok and report.error is not None
    assert report.error.startswith("NonDeterministicOrchestrationError: instance 'renamed'")
    assert "now schedules call_activity('B2')" in report.error


def test_a_golden_history_guards_an_orchestrator() -> None:
    # Recorded once on replay_v1 (`dfhost history export renamed`), kept in the repository.
    golden = GOLDEN / "renamed_waiting.json"
    assert replay_history(V1, golden).ok
    assert not replay_history(V2, golden).ok


def test_a_file_that_is_not_an_exported_history_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"historyEvents": []}')
    with pytest.raises(ValueError, match="is not a history exported by `dfhost history export`"):
        replay_history(V1, bad)
    bad.write_text("{nope")
    with pytest.raises(ValueError, match="is not JSON"):
        replay_history(V1, bad)
    with pytest.raises(ValueError, match="cannot read"):
        replay_history(V1, tmp_path / "missing.json")
