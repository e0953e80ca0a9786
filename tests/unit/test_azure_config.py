"""Which task hub an app gets, and how `azure` store URLs are read (no storage needed)."""

from __future__ import annotations

from typing import Any

import pytest

from dfhost.config import StorageProvider
from dfhost.store import StoreError, app_store_url, open_store
from dfhost.store.azure.config import parse_url

DEFAULT = "sqlite:////app/.dfhost/taskhub.sqlite3"
NO_SETTINGS = StorageProvider()


def provider(**settings: Any) -> StorageProvider:
    host_json = {"version": "2.0", "extensions": {"durableTask": {"storageProvider": settings}}}
    return StorageProvider.from_host_json(host_json)


def test_sqlite_unless_host_json_or_the_flag_says_otherwise() -> None:
    assert app_store_url(None, DEFAULT, "Hub", NO_SETTINGS) == DEFAULT
    assert app_store_url("", DEFAULT, "Hub", NO_SETTINGS) == DEFAULT
    assert app_store_url("sqlite:///x.db", DEFAULT, "Hub", provider(type="azureStorage")) == (
        "sqlite:///x.db"
    )


def test_host_json_selects_azure_storage_with_its_settings() -> None:
    storage = provider(
        type="AzureStorage",
        connectionName="MyStorage",
        partitionCount=2,
        controlQueueVisibilityTimeout="00:01:00",
        workItemQueueVisibilityTimeout="00:00:10.5",
        maxQueuePollingInterval="00:00:02",
    )
    assert app_store_url(None, DEFAULT, "MyHub", storage) == (
        "azure:MyStorage?hub=MyHub&partitions=2&control_timeout=60&workitem_timeout=10.5&max_poll=2"
    )


def test_the_flag_gets_the_apps_hub_unless_it_names_one() -> None:
    assert app_store_url("azure", DEFAULT, "MyHub", NO_SETTINGS) == "azure?hub=MyHub"
    assert (
        app_store_url("azure:Other?hub=Mine", DEFAULT, "MyHub", NO_SETTINGS)
        == "azure:Other?hub=Mine"
    )


def test_other_providers_fall_back_to_the_default(caplog: pytest.LogCaptureFixture) -> None:
    assert app_store_url(None, DEFAULT, "Hub", provider(type="mssql")) == DEFAULT
    assert "mssql" in caplog.text


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("azure:bad/name", "expected azure or azure:SETTING_NAME"),
        ("azure?hub=1bad", "hub '1bad' must be 3-45 letters"),
        ("azure?partitions=17", "partitions '17' must be from 1 to 16"),
        ("azure?partitions=2.5", "whole number"),
        ("azure?max_poll=0", "max_poll '0' must be from 0.1 to 60"),
        ("azure?colour=blue", "unsupported option 'colour'"),
        ("azure?hub=Abc&hub=Abd", "given more than once"),
    ],
)
def test_bad_urls_are_one_line_errors(
    url: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    with pytest.raises(StoreError, match=message):
        parse_url(url)


def test_a_missing_connection_setting_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NoSuchSetting", raising=False)
    with pytest.raises(StoreError, match="connection string in app setting 'NoSuchSetting'"):
        open_store("azure:NoSuchSetting")


def test_a_bad_duration_in_host_json_is_a_one_line_error() -> None:
    with pytest.raises(StoreError, match="maxQueuePollingInterval '30s' is not a duration"):
        app_store_url(
            None, DEFAULT, "Hub", provider(type="azureStorage", maxQueuePollingInterval="30s")
        )


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    target = parse_url("azure")
    assert (target.setting, target.hub, target.partitions) == (
        "AzureWebJobsStorage",
        "TestHubName",
        4,
    )
    assert (target.control_timeout, target.workitem_timeout, target.max_poll) == (30, 30, 1.0)
