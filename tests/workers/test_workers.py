"""Activities and entity operations run in worker processes (`FUNCTIONS_WORKER_PROCESS_COUNT`),
a worker that dies is replaced and its work runs again, and the host keeps serving."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.e2e.harness import HostProcess, finished
from tests.waiting import eventually
from tests.workers.conftest import HostFactory

pytestmark = pytest.mark.e2e


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.add(int(entry.name))
    return found


async def _run(host: HostProcess, activity: str, value: object = None) -> object:
    client = host.client("WorkersHub")
    iid = await client.start_new("run_one", None, {"activity": activity, "input": value})
    status = await finished(client, iid)
    assert status.runtime_status.value == "Completed", status.output
    return status.output


async def test_activities_and_entities_run_in_the_worker_processes(
    start_host: HostFactory,
) -> None:
    host = start_host(workers="2")
    assert host.proc is not None
    workers = _children(host.proc.pid)
    assert len(workers) == 2
    outputs = [await _run(host, "whoami", str(n)) for n in range(4)]
    assert {o["host"] for o in outputs} == {str(host.proc.pid)}  # type: ignore[index]
    assert {o["pid"] for o in outputs} <= workers  # type: ignore[index]

    client = host.client("WorkersHub")
    iid = await client.start_new("count_with_entity")
    status = await finished(client, iid)
    assert status.output["value"] == 2
    assert set(status.output["pids"]) <= workers


async def test_in_process_runs_the_functions_in_the_host(start_host: HostFactory) -> None:
    host = start_host("--in-process", workers="3")
    assert host.proc is not None
    assert _children(host.proc.pid) == set()
    output = await _run(host, "whoami", "x")
    assert output["pid"] == host.proc.pid  # type: ignore[index]


async def test_zero_worker_processes_is_in_process(start_host: HostFactory) -> None:
    host = start_host(workers="0")
    assert host.proc is not None
    assert (await _run(host, "whoami", "x"))["pid"] == host.proc.pid  # type: ignore[index]


async def test_a_worker_that_exits_is_replaced_and_its_activity_runs_again(
    start_host: HostFactory, state: Path
) -> None:
    host = start_host(workers="1")
    assert host.proc is not None
    [first] = _children(host.proc.pid)
    survivor = await _run(host, "crash_once", "boom")
    crashed_pid = int((state / "boom.crashed").read_text())
    assert crashed_pid == first
    assert survivor != first
    assert _children(host.proc.pid) == {survivor}
    assert any(
        f"worker process 0 (pid {first}) exited with code 3 while running activity "
        "'crash_once'; they run again" in line
        for line in host.lines
    ), host.output
    # The host kept serving.
    assert (await _run(host, "whoami", "after"))["pid"] == survivor  # type: ignore[index]


async def test_a_worker_that_segfaults_is_replaced(start_host: HostFactory, state: Path) -> None:
    host = start_host(workers="1")
    survivor = await _run(host, "crash_once", "segv")
    crashed_pid = int((state / "segv.crashed").read_text())
    assert survivor != crashed_pid
    assert any(
        f"(pid {crashed_pid}) was killed by SIGSEGV while running activity 'crash_once'" in line
        for line in host.lines
    ), host.output


async def test_a_worker_killed_mid_activity_is_replaced(
    start_host: HostFactory, state: Path
) -> None:
    host = start_host(workers="2")
    assert host.proc is not None
    client = host.client("WorkersHub")
    iid = await client.start_new(
        "run_one", None, {"activity": "block_until_released", "input": "gate"}
    )
    marker = state / "gate.pid"
    await eventually(marker.exists, timeout=20)
    victim = int(marker.read_text())
    marker.unlink()
    os.kill(victim, signal.SIGKILL)
    await eventually(marker.exists, timeout=20)  # it runs again
    rerun = int(marker.read_text())
    (state / "gate").write_text("go")
    status = await finished(client, iid)
    assert status.runtime_status.value == "Completed"
    assert status.output == rerun != victim
    host_pid = host.proc.pid
    workers = await eventually(lambda: _children(host_pid), lambda found: len(found) == 2)
    assert victim not in workers
    assert any("was killed by SIGKILL" in line for line in host.lines), host.output


async def test_an_activity_that_always_crashes_its_worker_fails(start_host: HostFactory) -> None:
    host = start_host(workers="1")
    client = host.client("WorkersHub")
    iid = await client.start_new("survive")
    status = await finished(client, iid, timeout=60)
    assert status.runtime_status.value == "Completed"
    assert status.output.startswith("Activity function 'always_crash' failed: the worker")
    assert "exited with code 7, exited with code 7, exited with code 7" in status.output
    assert (await _run(host, "whoami", "after"))["host"] == str(host.proc.pid)  # type: ignore[index,union-attr]


async def test_worker_logs_keep_their_tags_and_order_in_json(start_host: HostFactory) -> None:
    host = start_host("--log-format", "json", workers="2")
    client = host.client("WorkersHub")
    iid = await client.start_new("run_one", None, {"activity": "chatty", "input": ["a", "b"]})
    status = await finished(client, iid)
    assert status.output == 2

    def lines_of_chatty() -> list[dict[str, object]]:
        records = []
        for line in host.lines:
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("function") == "chatty":
                    records.append(record)
        return records

    records = await eventually(lines_of_chatty, lambda r: len(r) >= 5)
    messages = [str(r["message"]) for r in records]
    assert messages[0].startswith("Executing 'Functions.chatty'")
    assert messages[1:4] == ["said a", "said b", "printed last"]
    assert messages[4].startswith("Executed 'Functions.chatty' (Succeeded")
    for record in records[1:4]:
        assert record["instanceId"] == iid
        assert record["invocationId"] == records[0]["invocationId"]
        assert record["replay"] is False


async def test_worker_logs_are_tagged_on_the_console(start_host: HostFactory) -> None:
    host = start_host(workers="2")
    client = host.client("WorkersHub")
    iid = await client.start_new("run_one", None, {"activity": "chatty", "input": ["c"]})
    await finished(client, iid)
    tagged = await eventually(
        lambda: [line for line in host.lines if f"chatty ({iid}): " in line],
        lambda found: len(found) == 2,
    )
    assert tagged[0].endswith(f"chatty ({iid}): said c")
    assert tagged[1].endswith(f"chatty ({iid}): printed last")


async def test_workers_do_not_outlive_a_killed_host(start_host: HostFactory, state: Path) -> None:
    host = start_host(workers="2")
    assert host.proc is not None
    client = host.client("WorkersHub")
    # One worker blocked in user code when the host dies.
    await client.start_new("run_one", None, {"activity": "block_until_released", "input": "g"})
    await eventually((state / "g.pid").exists, timeout=20)
    workers = _children(host.proc.pid)
    assert int((state / "g.pid").read_text()) in workers
    host.kill()

    def alive() -> set[int]:
        return {pid for pid in workers if Path(f"/proc/{pid}").exists()}

    await eventually(alive, lambda found: not found, timeout=20)
