"""`dfhost history export ID APP_DIR [--store URL]` reads the task hub `dfhost start APP_DIR
[--store URL]` runs: the hub host.json names, on the backend host.json selects."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from dfhost.cli.main import main
from dfhost.testing import TestHost
from tests.conftest import selected_backends
from tests.testing.conftest import V1


def app_with(tmp_path: Path, durable: dict[str, Any]) -> Path:
    """replay_v1 with `durable` as host.json's extensions.durableTask."""
    app = tmp_path / "app"
    shutil.copytree(V1, app)
    (app / "host.json").write_text(
        json.dumps({"version": "2.0", "extensions": {"durableTask": durable}})
    )
    return app


async def record(app: Path, store_url: str) -> None:
    """Run instance 'steady' until it waits for its event."""
    async with TestHost(app, store_url=store_url) as host:
        await host.client.start_new("steady", "steady")
        await host.advance()


async def export(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code = await asyncio.to_thread(main, ["history", "export", "steady", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


async def test_a_postgresql_url_gets_the_hub_named_in_host_json(
    request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "postgres" not in selected_backends(request.config):
        pytest.skip("PostgreSQL: --backend did not select postgres")
    database: str = request.getfixturevalue("postgres_database")
    hub = f"X{uuid.uuid4().hex[:12]}"
    app = app_with(tmp_path, {"hubName": hub})
    await record(app, f"{database}&hub={hub}")

    document = await export(capsys, str(app), "--store", database)
    assert (document["instanceId"], document["runtimeStatus"]) == ("steady", "Running")


async def test_host_json_selecting_azure_storage_is_followed(
    request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "azure" not in selected_backends(request.config):
        pytest.skip("Azure Storage runs on Azurite, which --backend did not select")
    from tests import azurite

    request.getfixturevalue("azurite")  # its connection string is in app setting SETTING
    hub = f"X{uuid.uuid4().hex[:12]}"
    provider = {"type": "azureStorage", "connectionName": azurite.SETTING}
    app = app_with(tmp_path, {"hubName": hub, "storageProvider": provider})
    await record(app, azurite.store_url(hub))

    document = await export(capsys, str(app))
    assert (document["instanceId"], document["runtimeStatus"]) == ("steady", "Running")
    assert not (app / ".dfhost").exists()  # no SQLite hub was made on the way
