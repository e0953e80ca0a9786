"""`dfhost start`'s defaults: keys off on loopback, on anywhere else, created once and printed
once; `--allow-anonymous` warns; `--require-keys` enforces them on loopback too."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import httpx
import pytest

from tests.security.conftest import APP_DIR, BASE
from tests.security.host import Host, run
from tests.waiting import eventually_blocking

pytestmark = pytest.mark.e2e


def _key(output: str, name: str) -> str:
    found = re.search(rf"{re.escape(name)}: (\S+)", output)
    assert found, output
    return found.group(1)


def _wait_completed(http: httpx.Client, instance_id: str, key: str) -> dict[str, object]:
    def status() -> dict[str, object]:
        response = http.get(f"{BASE}/instances/{instance_id}", headers={"x-functions-key": key})
        body: dict[str, object] = response.json()
        return body

    return eventually_blocking(
        status, lambda body: body["runtimeStatus"] in ("Completed", "Failed"), timeout=20
    )


def test_non_loopback_bind_creates_prints_and_enforces_keys(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    with Host(APP_DIR, "--host", "0.0.0.0", "--store", store) as host:
        assert "Keys created in" in host.output
        master = _key(host.output, "master key")
        system = _key(host.output, "system key 'durabletask_extension'")
        host_key = _key(host.output, "host key 'default'")
        keys_file = tmp_path / "keys.json"
        assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
        assert json.loads(keys_file.read_text())["masterKey"] == master
        with httpx.Client(base_url=host.origin) as http:
            assert http.get(f"{BASE}/instances").status_code == 401
            assert http.get(f"{BASE}/instances", params={"code": system}).status_code == 200
            assert http.get("/api/member").status_code == 401
            assert http.get("/api/member", headers={"x-functions-key": host_key}).text == "member"
            assert http.get("/dashboard/").status_code == 303
            # The starter's own SDK client reaches the management API (by its RPC path).
            started = http.post("/api/start/hello", json="hi")
            assert started.status_code == 202, started.text
            assert master not in started.text and system not in started.text
            body = _wait_completed(http, started.json()["id"], master)
            assert body["runtimeStatus"] == "Completed" and body["output"] == "hi"
    # Second start: the same keys, never printed again.
    with Host(APP_DIR, "--host", "0.0.0.0", "--store", store) as again:
        assert "Keys created" not in again.output
        assert master not in again.output and system not in again.output
        with httpx.Client(base_url=again.origin) as http:
            assert http.get(f"{BASE}/instances", params={"code": system}).status_code == 200


def test_environment_keys_win_and_allow_anonymous_warns(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    env = {
        "host__master": "env-master-key-0123456789",
        "host.systemKey.durabletask_extension": "env-system-0123456789",
    }
    with Host(APP_DIR, "--require-keys", "--store", store, env=env) as host:
        assert "env-master-key" not in host.output
        assert "master key:" not in host.output  # the file's master key is not the one in effect
        with httpx.Client(base_url=host.origin) as http:
            assert http.get(f"{BASE}/instances").status_code == 401
            ok = http.get(
                f"{BASE}/instances",
                headers={"x-functions-key": env["host.systemKey.durabletask_extension"]},
            )
            assert ok.status_code == 200
            status = http.get("/admin/host/status", params={"code": env["host__master"]})
            assert status.status_code == 200
    with Host(APP_DIR, "--host", "0.0.0.0", "--allow-anonymous", "--store", store) as open_host:
        assert re.search(r"WARNING: 0\.0\.0\.0 is served without keys", open_host.output)
        with httpx.Client(base_url=open_host.origin) as http:
            assert http.get(f"{BASE}/instances").status_code == 200
            assert http.get("/api/boss").text == "boss"


def test_bad_flags_and_keys_files_stop_the_start_with_one_line(tmp_path: Path) -> None:
    both = run(APP_DIR, "--require-keys", "--allow-anonymous")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    (tmp_path / "keys.json").write_text('{"masterKey": "short"}')
    bad = run(APP_DIR, "--require-keys", "--store", f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    assert bad.returncode == 2
    assert "masterKey must be at least 16" in bad.stderr
    assert "Traceback" not in bad.stderr
