"""How an app's host.json fills in its PostgreSQL store URL: the hub from `hubName`, the takeover
window from `storageProvider.taskEventLockTimeout`; whatever the URL says itself wins."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from dfhost.app.loader import load_app
from dfhost.config import StorageProvider
from dfhost.store import StoreError, app_store_url, open_store
from dfhost.store.postgres import PostgresStore

DEFAULT = "sqlite:///default.sqlite3"
BASE = "postgresql://me@db.example:6543/work"


def app_dir(tmp_path: Path, durable: dict[str, Any]) -> Path:
    (tmp_path / "host.json").write_text(
        json.dumps({"version": "2.0", "extensions": {"durableTask": durable}})
    )
    (tmp_path / "function_app.py").write_text(
        "import azure.durable_functions as df\napp = df.DFApp()\n"
    )
    return tmp_path


def resolve(folder: Path, url: str | None) -> str:
    """What `dfhost start APP --store URL` opens."""
    app = load_app(folder)
    assert app.errors == []
    return app_store_url(url, DEFAULT, app.settings.hub_name, app.settings.storage)


def opened(url: str) -> PostgresStore:
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    return store


def query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query)


def test_the_app_hub_and_window_fill_in_what_the_url_leaves_out(tmp_path: Path) -> None:
    folder = app_dir(
        tmp_path, {"hubName": "Orders", "storageProvider": {"taskEventLockTimeout": "00:00:05"}}
    )
    # The URL's own parameters are kept as written (libpq would read a `+` as a plus).
    given = f"{BASE}?sslmode=disable&options=-c%20synchronous_commit%3Doff"
    url = resolve(folder, given)
    assert url == f"{given}&hub=Orders&takeover=5"
    store = opened(url)
    assert (store.hub, store.schema, store.takeover) == (
        "Orders",
        "dfhost_orders",
        timedelta(seconds=5),
    )


def test_the_url_wins_over_host_json(tmp_path: Path) -> None:
    folder = app_dir(
        tmp_path, {"hubName": "Orders", "storageProvider": {"taskEventLockTimeout": "00:01:00"}}
    )
    given = f"{BASE}?takeover=2.5&hub=Billing"
    assert resolve(folder, given) == given
    store = opened(resolve(folder, f"{BASE}?takeover=2.5"))
    assert (store.hub, store.takeover) == ("Orders", timedelta(seconds=2.5))
    store = opened(resolve(folder, f"{BASE}?hub=Billing"))
    assert (store.hub, store.takeover) == ("Billing", timedelta(minutes=1))


def test_without_settings_the_hub_is_the_app_default_and_the_window_30_s(tmp_path: Path) -> None:
    store = opened(resolve(app_dir(tmp_path, {}), BASE))
    assert (store.hub, store.takeover) == ("TestHubName", timedelta(seconds=30))
    assert query(resolve(app_dir(tmp_path, {"hubName": "Orders"}), BASE)) == [("hub", "Orders")]


def provider(**settings: object) -> dict[str, Any]:
    return {"extensions": {"durableTask": {"storageProvider": settings}}}


def storage(host_json: dict[str, Any]) -> StorageProvider:
    return StorageProvider.from_host_json(host_json)


@pytest.mark.parametrize(
    ("host_json", "seconds"),
    [
        (provider(taskEventLockTimeout=12), 12),
        (provider(taskEventLockTimeout=0.5), 0.5),
        (provider(TaskEventLockTimeout="0:02"), 120),  # keys are case-insensitive
        (provider(taskEventLockTimeout="1.00:00"), 86400),
        ({"durableTask": {"storageProvider": {"taskEventLockTimeout": "00:00:07.5"}}}, 7.5),
    ],
)
def test_host_json_durations(host_json: dict[str, Any], seconds: float) -> None:
    store = opened(app_store_url(BASE, DEFAULT, "Hub", storage(host_json)))
    assert store.takeover == timedelta(seconds=seconds)


def test_an_environment_override_sets_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AzureFunctionsJobHost__extensions__durableTask__storageProvider__taskEventLockTimeout",
        "00:00:04",
    )
    assert opened(resolve(app_dir(tmp_path, {}), BASE)).takeover == timedelta(seconds=4)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", r"taskEventLockTimeout 'soon' is not a duration like 00:00:30"),
        ("30", r"taskEventLockTimeout '30' is not a duration"),  # .NET would read 30 days
        ("00:00:00", r"taskEventLockTimeout '00:00:00' must be a positive duration"),
        (-1, r"taskEventLockTimeout -1 must be a positive duration"),
        (True, r"taskEventLockTimeout True is not a duration"),
    ],
)
def test_bad_host_json_windows_are_clear_errors(value: object, message: str) -> None:
    host_json = {
        "extensions": {"durableTask": {"storageProvider": {"taskEventLockTimeout": value}}}
    }
    with pytest.raises(StoreError, match=message):
        app_store_url(BASE, DEFAULT, "Hub", storage(host_json))
    # The URL's own window wins, so a bad host.json value is not even read then.
    assert app_store_url(f"{BASE}?takeover=3", DEFAULT, "Hub", storage(host_json)) == (
        f"{BASE}?takeover=3&hub=Hub"
    )


def test_other_stores_ignore_the_postgres_settings() -> None:
    settings = storage(provider(taskEventLockTimeout=5))
    assert app_store_url("sqlite:///x.db", DEFAULT, "Hub", settings) == "sqlite:///x.db"
    assert app_store_url(None, DEFAULT, "Hub", settings) == DEFAULT


def test_urls_resolve_without_the_driver_installed() -> None:
    """`dfhost start` resolves the URL first; a missing psycopg is reported once, by open_store."""
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from dfhost.config import StorageProvider\n"
        "from dfhost.store import StoreError, app_store_url, open_store\n"
        f"url = app_store_url({BASE!r}, 'sqlite:///x', 'Orders', StorageProvider())\n"
        "print(url)\n"
        "try:\n    open_store(url)\nexcept StoreError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    url, error = done.stdout.splitlines()
    assert url == f"{BASE}?hub=Orders"
    assert "pip install 'dfhost[postgres]'" in error
