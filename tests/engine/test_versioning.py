"""Orchestration versioning (host.json `defaultVersion`, `versionMatchStrategy`,
`versionFailureStrategy`): during a rolling upgrade on a shared hub, a host with older
orchestrator code leaves newer instances to the newer hosts, or fails them if told to."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.config import VersionFailure, VersionMatch
from dfhost.history import OrchestrationStatus
from dfhost.orchestration.versioning import compare_versions, mismatch
from dfhost.runtime import engine as engine_module
from dfhost.runtime.engine import Engine
from dfhost.store import Store
from tests.e2e.harness import APPS
from tests.waiting import eventually

ORCHESTRATOR = "hello_orchestrator"


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        (None, None, 0),
        ("", None, 0),
        (None, "1.0", -1),
        ("1.0", None, 1),
        ("1.0", "1.0", 0),
        ("1.2", "1.10", -1),  # by number, not as text
        ("1.0", "1.0.0", -1),  # .NET: a missing part is below zero
        ("2.0.0.1", "2.0.0", 1),
        ("10", "9", -1),  # one part is no .NET Version: text
        ("V2-beta", "v2-BETA", 0),  # text ignores case
        ("2025-01-02", "2025-01-10", -1),
    ],
)
def test_versions_compare_as_the_extension_compares_them(
    a: str | None, b: str | None, order: int
) -> None:
    assert compare_versions(a, b) == order
    assert compare_versions(b, a) == -order


def test_which_versions_a_host_runs() -> None:
    assert mismatch("2.0", None, "CurrentOrOlder") is None  # no defaultVersion: every one
    assert mismatch("2.0", "1.0", "None") is None
    assert mismatch("1.0", "2.0", "CurrentOrOlder") is None
    assert mismatch(None, "2.0", "CurrentOrOlder") is None
    assert mismatch("2.0", "1.0", "CurrentOrOlder") == (
        "The orchestration version '2.0' is greater than the worker version '1.0'."
    )
    assert mismatch("1.0", "2.0", "Strict") == (
        "The orchestration version '1.0' does not match the worker version '2.0'."
    )
    assert mismatch("2.0", "2.0", "Strict") is None


def test_the_strategies_are_read_from_host_json_in_any_casing(tmp_path: Path) -> None:
    app_dir = _app_copy(
        tmp_path, '"versionMatchStrategy": "strict", "versionFailureStrategy": "FAIL"'
    )
    app = load_app(app_dir)
    assert (app.settings.version_match, app.settings.version_failure) == ("Strict", "Fail")
    defaults = load_app(_app_copy(tmp_path / "defaults", ""))
    assert (defaults.settings.version_match, defaults.settings.version_failure) == (
        "CurrentOrOlder",
        "Reject",
    )


def test_an_unknown_strategy_is_a_clear_load_error(tmp_path: Path) -> None:
    app = load_app(_app_copy(tmp_path, '"versionMatchStrategy": "Newest"'))
    [error] = app.errors
    assert "versionMatchStrategy 'Newest' is not one of: CurrentOrOlder, Strict, None" in (
        error.message
    )


def _app_copy(folder: Path, durable_settings: str) -> Path:
    """v2_basic with `durable_settings` in its host.json's durableTask section."""
    import shutil

    shutil.copytree(APPS / "v2_basic", folder, dirs_exist_ok=True)
    extra = f", {durable_settings}" if durable_settings else ""
    (folder / "host.json").write_text(
        '{"version": "2.0", "extensions": {"durableTask": {"defaultVersion": "1.0"' + extra + "}}}"
    )
    return folder


@pytest.fixture(scope="module")
def base_app() -> FunctionApp:
    loaded = load_app(APPS / "v2_basic")
    assert loaded.errors == []
    return loaded


Versioned = Callable[[str, VersionMatch, VersionFailure], FunctionApp]


@pytest.fixture
def versioned(base_app: FunctionApp) -> Versioned:
    def at(version: str, match: VersionMatch, failure: VersionFailure) -> FunctionApp:
        settings = replace(
            base_app.settings, default_version=version, version_match=match, version_failure=failure
        )
        return replace(base_app, settings=settings)

    return at


async def test_an_older_host_leaves_a_newer_instance_to_a_newer_host(
    store: Store,
    versioned: Versioned,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(engine_module, "REJECT_RETRY", timedelta(seconds=0.2))
    caplog.set_level(logging.WARNING, logger="dfhost.engine")
    old = Engine(versioned("1.0", "CurrentOrOlder", "Reject"), store, owner="old")
    await old.start()
    try:
        client = DurableClient(store, default_version="2.0")  # a newer host's client
        newer = await client.start_new(ORCHESTRATOR, "newer")
        older = await client.start_new(ORCHESTRATOR, "older", version="1.0")
        done = await client.wait_for_completion(older, timeout=30)
        assert done is not None and done.status is OrchestrationStatus.COMPLETED
        # Rejected again and again (every REJECT_RETRY), logged once.
        await eventually(
            lambda: caplog.text.count("orchestration newer is left for another host"),
            lambda count: count == 1,
            timeout=10,
        )
        waiting = await client.get_status(newer)
        assert waiting is not None and waiting.status is OrchestrationStatus.PENDING

        new = Engine(versioned("2.0", "CurrentOrOlder", "Reject"), store, owner="new")
        await new.start()
        try:
            finished = await client.wait_for_completion(newer, timeout=30)
            assert finished is not None and finished.status is OrchestrationStatus.COMPLETED
        finally:
            await new.stop()
    finally:
        await old.stop()
    assert caplog.text.count("orchestration newer is left for another host") == 1
    assert "is greater than the worker version '1.0'" in caplog.text


async def test_fail_fails_an_instance_of_another_version(
    store: Store, versioned: Versioned
) -> None:
    engine = Engine(versioned("1.0", "Strict", "Fail"), store)
    await engine.start()
    try:
        client = DurableClient(store, default_version="1.0")
        other = await client.start_new(ORCHESTRATOR, "other", version="0.9")
        same = await client.start_new(ORCHESTRATOR, "same")  # the default version, 1.0
        failed = await client.wait_for_completion(other, timeout=30)
        ran = await client.wait_for_completion(same, timeout=30)
    finally:
        await engine.stop()
    assert failed is not None and failed.status is OrchestrationStatus.FAILED
    assert "The orchestration version '0.9' does not match the worker version '1.0'." in str(
        failed.output
    )
    assert ran is not None and ran.status is OrchestrationStatus.COMPLETED
    assert ran.version == "1.0"
