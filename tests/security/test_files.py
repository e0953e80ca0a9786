"""What a host writes to disk: a new SQLite hub and its folder are private (0600/0700), a
start warns when the hub or keys.json is readable by other users, and keys.json is not written
when the environment gives every key it would hold (issue 21, item 10)."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from dfhost.history import utcnow
from dfhost.store import open_store
from dfhost.web.keys import load_keys
from dfhost.work import StartRequest
from tests.conftest import selected_backends
from tests.security.conftest import APP_DIR
from tests.security.host import Host

ENV_KEYS = {
    "host__master": "M" * 24,
    "host__function__default": "H" * 24,
    "host__systemKey__durabletask_extension": "S" * 24,
}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_sqlite_hub_and_its_folder_are_private(tmp_path: Path) -> None:
    path = tmp_path / "hubs" / "new" / "hub.sqlite3"
    store = open_store(f"sqlite:///{path}")
    await store.start()
    try:
        request = StartRequest(instance_id="i", name="o", execution_id="e", created_at=utcnow())
        assert await store.create_instance(request)
    finally:
        await store.close()
    assert mode(path.parent) == 0o700
    assert mode(path) == 0o600
    for companion in path.parent.glob("hub.sqlite3-*"):  # -wal, -shm while they exist
        assert mode(companion) & 0o077 == 0, companion
    # A folder that exists keeps its mode: it may be the app's own.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    other = open_store(f"sqlite:///{shared / 'hub.sqlite3'}")
    await other.start()
    await other.close()
    assert mode(shared) == 0o755 and mode(shared / "hub.sqlite3") == 0o600


def test_keys_json_is_not_written_when_the_environment_gives_every_key(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # nothing can be created under it: a read-only app folder
    loaded = load_keys(blocker / ".dfhost", env=ENV_KEYS)
    assert loaded.created is None and loaded.shown == {}
    assert loaded.keys.master == "M" * 24
    assert loaded.keys.host == {"default": "H" * 24}
    assert loaded.keys.system_keys() == ["S" * 24, "M" * 24]
    # A key missing from the environment: the file is needed again.
    partial = load_keys(tmp_path / "hub", env={"host__master": "M" * 24})
    assert partial.created == tmp_path / "hub" / "keys.json"


@pytest.mark.e2e
def test_start_warns_when_the_hub_or_keys_json_is_readable_by_others(tmp_path: Path) -> None:
    hub = tmp_path / "hub.sqlite3"
    with Host(APP_DIR, "--store", f"sqlite:///{hub}", "--require-keys") as host:
        assert "readable by other users" not in host.output
    hub.chmod(0o644)
    (tmp_path / "keys.json").chmod(0o640)
    with Host(APP_DIR, "--store", f"sqlite:///{hub}", "--require-keys") as host:
        warnings = [line for line in host.lines if "readable by other users" in line]
    assert len(warnings) == 2, host.output
    assert "hub.sqlite3 is readable by other users (mode 644)" in warnings[0]
    assert "keys.json is readable by other users (mode 640)" in warnings[1]


@pytest.mark.e2e
def test_a_postgres_host_starts_from_a_read_only_app_folder_with_keys_in_the_environment(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if "postgres" not in selected_backends(request.config):
        pytest.skip("PostgreSQL: --backend did not select postgres")
    database: str = request.getfixturevalue("postgres_database")
    app_dir = tmp_path / "app"
    shutil.copytree(APP_DIR, app_dir)
    (app_dir / ".dfhost").write_text("")  # no folder can be made there
    store = f"{database}&hub=readonly"
    with Host(app_dir, "--store", store, "--require-keys", env=ENV_KEYS) as host:
        assert "Keys created" not in host.output
        assert "keys are enforced" in host.output
