"""`dfhost` on the command line: clear one-line errors instead of tracebacks."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dfhost import __version__
from tests.e2e.harness import APPS, HostProcess, finished
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


def dfhost(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dfhost", *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    result = dfhost("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"dfhost {__version__}"


def test_missing_app_folder(tmp_path: Path) -> None:
    result = dfhost("start", str(tmp_path / "nope"), "--port", "0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "nope" in result.stderr


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = dfhost(
            "start",
            str(APPS / "e2e_v2"),
            "--port",
            str(port),
            "--store",
            f"sqlite:///{tmp_path / 'hub.sqlite3'}",
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_store_url(tmp_path: Path) -> None:
    result = dfhost("start", str(APPS / "e2e_v2"), "--port", "0", "--store", "mysql://x")
    assert result.returncode == 2
    assert "unsupported store URL" in result.stderr
    assert "Traceback" not in result.stderr


async def test_broken_functions_are_reported_and_the_rest_runs(tmp_path: Path) -> None:
    host = HostProcess(APPS / "v1_broken", f"sqlite:///{tmp_path / 'hub.sqlite3'}").start()
    try:
        async with httpx.AsyncClient(base_url=host.origin) as http:
            assert (await http.get("/admin/host/status")).json()["state"] == "Running"
    finally:
        host.stop()
    errors = [line for line in host.lines if "function.json" in line or "Error" in line]
    assert errors, host.output
    assert "Traceback" not in host.output


async def test_two_hosts_share_one_sqlite_hub_and_a_survivor_takes_over(
    tmp_path: Path, sdk_session: None
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    store = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    env = {"DFHOST_E2E_STATE": str(state)}
    first, second = (
        HostProcess(APPS / "e2e_v2", store, env),
        HostProcess(APPS / "e2e_v2", store, env),
    )
    try:
        first.start()
        second.start()
        # Each host runs the work its own clients enqueue: both work on one file at once.
        # (The second host first, so that its start-up claim cannot race the first host.)
        client = second.client("E2EHub")
        on_second = await client.start_new("blocked", None, "b")
        await eventually((state / "b.started").exists, timeout=20)
        on_first = await first.client("E2EHub").start_new("blocked", None, "a")
        await eventually((state / "a.started").exists, timeout=20)
        for name, host in (("a", first), ("b", second)):
            assert host.proc is not None
            assert int((state / f"{name}.started").read_text()) == host.proc.pid

        first.kill()
        (state / "a.started").unlink()
        (state / "a").write_text("released a")
        (state / "b").write_text("released b")
        # The survivor's next claim finds the dead host's lock file unlocked and takes over
        # its activity at once, without waiting for the lease to expire.
        await client.start_new("chain")
        status = await finished(client, on_first)
        assert (status.runtime_status.value, status.output) == ("Completed", "released a")
        assert second.proc is not None
        assert int((state / "a.started").read_text()) == second.proc.pid
        status = await finished(client, on_second)
        assert (status.runtime_status.value, status.output) == ("Completed", "released b")
    finally:
        first.stop()
        second.stop()
