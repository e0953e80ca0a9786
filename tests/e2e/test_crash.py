"""A host killed with SIGKILL loses nothing: its work runs again after a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.harness import APPS, HostProcess, finished
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


async def test_sigkill_mid_activity_then_restart_completes(
    tmp_path: Path, sdk_session: None
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    store = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    env = {"DFHOST_E2E_STATE": str(state)}
    first = HostProcess(APPS / "e2e_v2", store, env).start()
    try:
        client = first.client("E2EHub")
        iid = await client.start_new("blocked", None, "release")
        started = state / "release.started"
        await eventually(started.exists, timeout=20)
        first_pid = int(started.read_text())
        first.kill()
    finally:
        first.stop()
    assert first.proc is not None and first.proc.returncode == -9

    started.unlink()
    (state / "release").write_text("released")
    second = HostProcess(APPS / "e2e_v2", store, env).start()
    try:
        client = second.client("E2EHub")
        status = await finished(client, iid)
        assert status.runtime_status.value == "Completed"
        assert status.output == "released"
        # The activity really ran again in the new process (at-least-once).
        assert int(started.read_text()) != first_pid
        assert int(started.read_text()) != os.getpid()
    finally:
        second.stop()
