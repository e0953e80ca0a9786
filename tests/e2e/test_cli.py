"""`dfhost` on the command line: clear one-line errors instead of tracebacks."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dfhost import __version__
from tests.e2e.harness import APPS, HostProcess

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


async def test_second_host_on_the_same_sqlite_hub_is_refused(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    first = HostProcess(APPS / "e2e_v2", store).start()
    try:
        result = dfhost("start", str(APPS / "e2e_v2"), "--port", "0", "--store", store)
    finally:
        first.stop()
    assert result.returncode == 2
    assert "in use by another dfhost host" in result.stderr
