"""`dfhost start` with operations settings: `--ensure` from two hosts at once and across a
restart, host.json `ensure` and `retention`, and bad settings refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.waiting import eventually_blocking

from .conftest import BASE, OPS_APP, OpsHost, copy_ops_app, run_cli, wait_http

pytestmark = pytest.mark.e2e


def instances(host: OpsHost) -> list[dict[str, Any]]:
    return list(httpx.get(f"{host.origin}{BASE}/instances").json())


@pytest.mark.slow
def test_ensure_from_two_hosts_at_once_and_after_a_restart(tmp_path: Path, state: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    ensure = ["--ensure", 'monitor=eternal:{"not": "used"}', "--ensure", "watch=eternal"]
    hosts = [OpsHost(OPS_APP, url, state, *ensure).launch() for _ in range(2)]
    try:
        serving = [h for h in hosts if h.wait_ready()]
        assert serving, "\n".join(h.output for h in hosts)
        for instance_id in ("monitor", "watch"):
            wait_http(serving[0], instance_id, "Running")
        found = instances(serving[0])
        assert sorted(i["instanceId"] for i in found) == ["monitor", "watch"]
        before = {i["instanceId"]: i["createdTime"] for i in found}
    finally:
        for h in hosts:
            h.stop()
    lines = [line for h in hosts for line in h.lines if "ensure:" in line]
    # Each id was started by exactly one host; a host that also ran found it already there
    # (a host refused by the hub's host lock, if any, logged nothing).
    for instance_id in ("monitor", "watch"):
        started = [line for line in lines if f"ensure: started '{instance_id}'" in line]
        assert len(started) == 1, lines

    again = OpsHost(OPS_APP, url, state, *ensure).start()
    try:
        found = instances(again)
        assert {i["instanceId"]: i["createdTime"] for i in found} == before
        assert all(i["runtimeStatus"] == "Running" for i in found)
        assert "ensure: 'monitor' (eternal) is already Running" in again.output
    finally:
        again.stop()


@pytest.mark.slow
def test_host_json_ensure_and_retention(tmp_path: Path, state: Path) -> None:
    app_dir = copy_ops_app(tmp_path / "app")
    settings = {
        "retention": {"completed": "00:00:01", "terminated": "00:00:01"},
        "ensure": {"keeper": {"orchestrator": "waiter"}},
    }
    host_json = json.loads((app_dir / "host.json").read_text())
    host_json["extensions"]["durableTask"]["dfhost"] = settings
    (app_dir / "host.json").write_text(json.dumps(host_json))
    host = OpsHost(app_dir, f"sqlite:///{tmp_path / 'hub.sqlite3'}", state).start()
    try:
        wait_http(host, "keeper", "Running")
        started = httpx.post(f"{host.origin}{BASE}/orchestrators/echo/short-lived", json=1)
        assert started.status_code == 202
        wait_http(host, "short-lived", "Completed")
        # Kept for a second after it finished, then purged by the background sweep.
        eventually_blocking(
            lambda: httpx.get(f"{host.origin}{BASE}/instances/short-lived").status_code,
            lambda code: code == 404,
            timeout=10,
            what="retention purging it",
        )
        assert wait_http(host, "keeper", "Running")  # unfinished instances are never purged
    finally:
        host.stop()
    assert "retention purged 1 finished instance(s)" in host.output


@pytest.mark.parametrize(
    ("args", "settings", "message"),
    [
        (["--ensure", "x"], None, "--ensure 'x': expected ID=ORCHESTRATOR[:JSON]"),
        (["--ensure", "x=nope"], None, "'nope' is not an orchestrator of this app"),
        (["--ensure", "a/b=echo"], None, "invalid characters"),
        (["--ensure", "x=echo:{bad"], None, "the input is not valid JSON"),
        ([], {"retention": {"completed": "a week"}}, "retention.completed 'a week' is not"),
    ],
)
def test_bad_operations_settings_stop_the_start(
    tmp_path: Path, args: list[str], settings: Any, message: str
) -> None:
    app_dir = copy_ops_app(tmp_path / "app")
    if settings is not None:
        host_json = json.loads((app_dir / "host.json").read_text())
        host_json["extensions"]["durableTask"]["dfhost"] = settings
        (app_dir / "host.json").write_text(json.dumps(host_json))
    store = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    result = run_cli("start", str(app_dir), "--port", "0", "--store", store, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
