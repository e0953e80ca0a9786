"""A triggered function whose settings cannot be used does not run, with one line saying why;
the others start; a reloaded app's listeners replace the old ones."""

from __future__ import annotations

import logging

import pytest

from dfhost.app.loader import load_app
from dfhost.runtime.triggers import TriggerHost
from tests.e2e.harness import APPS


async def test_a_function_without_its_connection_is_reported_and_the_others_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("AzureWebJobsStorage", "RabbitMQConnection", "RedisConnection"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RedisConnection", "redis://127.0.0.1:1/0")  # set, never reached
    for name in ("RABBIT_IN", "RABBIT_OUT", "REDIS_LIST", "REDIS_STREAM", "REDIS_CHANNEL"):
        monkeypatch.setenv(name, "unused")
    app = load_app(APPS / "triggers_v1")
    host = TriggerHost(app, owner="test-host", rpc_base_url="http://127.0.0.1:1/")
    with caplog.at_level(logging.INFO, logger="dfhost.triggers"):
        await host.start()
        try:
            started = sorted(listener.function.name for listener in host.listeners)
        finally:
            await host.stop(grace=1)
    assert started == ["FromRedisList", "FromRedisPubSub", "FromRedisStream"]
    assert host.problems == [
        "rabbitMQTrigger function 'FromRabbit': app setting 'RabbitMQConnection' (the "
        "RabbitMQ connectionStringSetting) is not set; it does not run"
    ]
    assert "dfhost: redisListTrigger 'FromRedisList' listens to Redis list" in caplog.text


async def test_use_app_replaces_the_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RedisConnection", "redis://127.0.0.1:1/0")  # set, never reached
    monkeypatch.setenv("RabbitMQConnection", "amqp://guest:guest@127.0.0.1:1/")
    for name in ("RABBIT_IN", "RABBIT_OUT", "REDIS_LIST", "REDIS_STREAM", "REDIS_CHANNEL"):
        monkeypatch.setenv(name, "unused")
    app = load_app(APPS / "triggers_v1")
    host = TriggerHost(app, owner="test-host", rpc_base_url="http://127.0.0.1:1/")
    await host.start()
    try:
        old = {listener.function.name: listener for listener in host.listeners}
        assert "FromRedisList" in old and host.event_grid is not None
        old_grid = host.event_grid
        monkeypatch.setenv("AzureWebJobs.FromRedisList.Disabled", "true")
        await host.use_app(load_app(APPS / "triggers_v1"), grace=1)
        new = {listener.function.name: listener for listener in host.listeners}
    finally:
        await host.stop(grace=1)
    assert set(new) == set(old) - {"FromRedisList"}
    assert all(listener._task is None for listener in old.values())  # stopped
    assert not set(old.values()) & set(new.values())
    assert host.event_grid is not old_grid
