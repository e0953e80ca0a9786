"""The one settings reader: its key lookup, its TimeSpan parser, and the typed settings an app
gets from host.json, local.settings.json and the environment."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dfhost.config import (
    AppSettings,
    HttpSettings,
    Limits,
    SettingsError,
    StorageProvider,
    get_ci,
    load_settings,
    parse_drain_flag,
    parse_timespan,
    read_ops_settings,
    valid,
)
from dfhost.runtime.schedule import IntervalSchedule, ScheduleError, parse_schedule

OVERRIDE = "AzureFunctionsJobHost__extensions__durableTask__"


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings are read with no override or site name from outside the test, and the
    local.settings.json Values that load_settings puts into os.environ go afterwards."""
    for key in list(os.environ):
        if key.lower().startswith("azurefunctionsjobhost__") or key == "WEBSITE_SITE_NAME":
            monkeypatch.delenv(key)
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def app(tmp_path: Path, host: dict[str, Any] | str | None = None) -> Path:
    """An app folder with this host.json (settings need no function code)."""
    if host is not None:
        text = host if isinstance(host, str) else json.dumps({"version": "2.0", **host})
        (tmp_path / "host.json").write_text(text)
    return tmp_path


def durable(**settings: Any) -> dict[str, Any]:
    return {"extensions": {"durableTask": settings}}


def settings_of(tmp_path: Path, host: dict[str, Any]) -> AppSettings:
    settings, errors = load_settings(app(tmp_path, host))
    assert errors == []
    return settings


# --- the lookup ------------------------------------------------------------------------------


def test_keys_are_case_insensitive_and_the_exact_casing_wins_else_the_first() -> None:
    assert get_ci({"HubName": "a"}, "hubName") == "a"
    # The casing dfhost documents wins wherever it is...
    assert get_ci({"HUBNAME": "a", "hubName": "b", "hubname": "c"}, "hubName") == "b"
    # ...else the first in file order.
    assert get_ci({"HUBNAME": "a", "HubName": "b"}, "hubName") == "a"
    assert get_ci({"other": 1}, "hubName") is None
    assert get_ci(["hubName"], "hubName") is None  # not an object: nothing to find


def test_an_environment_override_beats_every_casing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = {
        "extensions": {
            "durableTask": {"HubName": "First", "hubName": "Exact"},
            "DurableTask": {"hubName": "Elsewhere"},
        }
    }
    monkeypatch.setenv(OVERRIDE.upper() + "HUBNAME", "FromEnv")
    settings = settings_of(tmp_path, host)
    assert settings.hub_name == "FromEnv"
    extensions = settings.host_json["extensions"]
    assert extensions["durableTask"] == {"HubName": "FromEnv"}
    assert extensions["DurableTask"] == {"hubName": "FromEnv"}


# --- the TimeSpan parser ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:05", timedelta(minutes=5)),
        ("1:2", timedelta(hours=1, minutes=2)),
        ("23:59:59", timedelta(hours=23, minutes=59, seconds=59)),
        ("7.00:00:00", timedelta(days=7)),
        ("1.12:00", timedelta(days=1, hours=12)),
        ("00:00:01.5", timedelta(seconds=1.5)),
        ("00:00:00.1234567", timedelta(microseconds=123456)),  # .NET ticks: 100 ns
        ("  00:00:30 ", timedelta(seconds=30)),
        ("-00:00:30", timedelta(seconds=-30)),
        ("-1.00:00:00", timedelta(days=-1)),
        ("10675199.00:00:00", timedelta(days=10675199)),
    ],
)
def test_timespans_it_reads(text: str, expected: timedelta) -> None:
    assert parse_timespan(text, "host.json x") == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("24:00:00", "is out of range: hours must be 0-23"),  # 24 days to .NET
        ("36:00", "is out of range"),
        ("00:60:00", "is out of range"),
        ("00:00:60", "is out of range"),
        ("30", "is not a duration like 00:00:30"),  # 30 days to .NET
        ("1:2:3:4", "is not a duration"),  # .NET's d:hh:mm:ss
        ("00:00:00.12345678", "is not a duration"),
        ("1.2.3", "is not a duration"),
        ("00:05:00Z", "is not a duration"),
        ("+00:05:00", "is not a duration"),
        ("P7D", "is not a duration"),
        ("", "is not a duration"),
        ("10675200.00:00:00", "is longer than 10675199 days"),
        (30, "is not a duration"),  # numbers are seconds only where the setting says so
        (None, "is not a duration"),
    ],
)
def test_timespans_it_refuses_in_one_line_naming_the_setting(value: Any, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_timespan(value, "host.json some.setting")
    assert str(caught.value).startswith(f"host.json some.setting {value!r} {problem}")
    assert "\n" not in str(caught.value)


def test_numbers_are_seconds_where_the_setting_takes_them() -> None:
    assert parse_timespan(12, "x", seconds=True) == timedelta(seconds=12)
    assert parse_timespan(0.5, "x", seconds=True) == timedelta(seconds=0.5)
    assert parse_timespan("00:00:12", "x", seconds=True) == timedelta(seconds=12)
    for bad in (True, float("nan"), float("inf"), "12"):
        with pytest.raises(SettingsError, match="is not a"):
            parse_timespan(bad, "x", seconds=True)


def _function_timeout(text: str) -> timedelta:
    seconds = Limits.from_host_json({"functionTimeout": text}).function_timeout
    assert seconds is not None
    return timedelta(seconds=seconds)


def _retention(text: str) -> timedelta:
    section = {"dfhost": {"retention": {"completed": text}}}
    policy = read_ops_settings({"extensions": {"durableTask": section}}).retention
    assert policy is not None
    return next(iter(policy.periods.values()))


def _shutdown_timeout(text: str) -> timedelta:
    section = {"dfhost": {"shutdownTimeout": text}}
    seconds = read_ops_settings({"extensions": {"durableTask": section}}).shutdown_timeout
    return timedelta(seconds=seconds)


def _visibility(text: str) -> timedelta:
    provider = {"storageProvider": {"controlQueueVisibilityTimeout": text}}
    timeout = StorageProvider.from_host_json(durable(**provider)).control_queue_visibility_timeout
    assert timeout is not None
    return valid(timeout)


def _schedule(text: str) -> timedelta:
    try:
        schedule = parse_schedule(text)
    except ScheduleError as exc:
        raise SettingsError(str(exc)) from None
    assert isinstance(schedule, IntervalSchedule)
    return schedule.period


READERS: dict[str, Callable[[str], timedelta]] = {
    "functionTimeout": _function_timeout,
    "retention": _retention,
    "shutdownTimeout": _shutdown_timeout,
    "storageProvider": _visibility,
    "schedule": _schedule,
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:01:00", timedelta(minutes=1)),
        ("00:1:00", timedelta(minutes=1)),  # the Azure Storage reader wanted two digits
        ("2.03:04:05.5", timedelta(days=2, hours=3, minutes=4, seconds=5.5)),
        ("36:00:00", None),  # read as 36 hours by three readers, refused by the schedule
        ("99:00:00", None),
        ("00:99:00", None),  # read as 99 minutes by the Azure Storage reader
        ("1:2:3:4", None),
    ],
)
def test_every_duration_setting_reads_a_timespan_alike(
    reader: str, text: str, expected: timedelta | None
) -> None:
    """The bug: four parsers disagreed on hours over 23, one-digit minutes and minutes over 59."""
    if expected is None:
        with pytest.raises(SettingsError, match=r"is out of range|is not a duration"):
            READERS[reader](text)
    else:
        assert READERS[reader](text) == expected


# --- an app's settings -----------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    settings, errors = load_settings(app(tmp_path))
    assert errors == []
    assert settings.extended_sessions is True
    assert settings.limits == Limits()
    assert settings.http == HttpSettings()
    assert settings.operations.retention is None
    assert settings.storage == StorageProvider()


@pytest.mark.parametrize("key", ["extendedSessionsEnabled", "ExtendedSessionsEnabled"])
def test_extended_sessions_can_be_turned_off_in_any_casing(tmp_path: Path, key: str) -> None:
    """The bug: the engine read `extendedSessionsEnabled` with its exact casing only."""
    assert settings_of(tmp_path, durable(**{key: False})).extended_sessions is False
    assert settings_of(tmp_path, durable(**{key: True})).extended_sessions is True


@pytest.mark.parametrize("value", ["false", "False", " FALSE "])
def test_the_environment_override_turns_extended_sessions_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """The bug: the override's value is the text "false", and only the JSON false counted."""
    monkeypatch.setenv(OVERRIDE + "extendedSessionsEnabled", value)
    assert settings_of(tmp_path, durable(extendedSessionsEnabled=True)).extended_sessions is False


def test_a_bad_flag_is_a_load_error_and_keeps_the_default(tmp_path: Path) -> None:
    settings, errors = load_settings(app(tmp_path, durable(extendedSessionsEnabled="no")))
    assert settings.extended_sessions is True
    assert [(e.message, e.fatal) for e in errors] == [
        ("extensions.durableTask.extendedSessionsEnabled 'no' is neither true nor false", False)
    ]


def test_durable_http_settings_are_case_insensitive_and_overridable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = {
        "Extensions": {
            "DurableTask": {"HttpSettings": {"defaultasyncrequestsleeptimemilliseconds": 1500}}
        }
    }
    assert settings_of(tmp_path, host).http.poll_interval == 1.5
    monkeypatch.setenv(OVERRIDE + "httpSettings__defaultAsyncRequestSleepTimeMilliseconds", "250")
    assert settings_of(tmp_path, host).http.poll_interval == 0.25
    monkeypatch.setenv(OVERRIDE + "httpSettings__defaultAsyncRequestSleepTimeMilliseconds", "soon")
    settings, errors = load_settings(app(tmp_path, host))
    assert settings.http == HttpSettings()
    assert "defaultAsyncRequestSleepTimeMilliseconds 'soon' is not a number" in errors[0].message
    assert not errors[0].fatal


def test_limits_and_operations_are_read_once_and_their_problems_are_fatal(
    tmp_path: Path,
) -> None:
    host = {
        "functionTimeout": "00:00:05",
        **durable(maxOrchestrationActions="7", dfhost={"retention": {"failed": "1.00:00:00"}}),
    }
    settings = settings_of(tmp_path, host)
    assert settings.limits == Limits(max_actions=7, function_timeout=5.0)
    assert settings.operations.retention is not None
    assert settings.operations.retention.periods

    bad = {"functionTimeout": "24:00:00", **durable(dfhost={"retention": {"failed": "1 day"}})}
    settings, errors = load_settings(app(tmp_path, bad))
    assert (settings.limits, settings.operations.retention) == (Limits(), None)
    assert [(e.message.split(" ")[0], e.fatal) for e in errors] == [
        ("functionTimeout", True),
        ("extensions.durableTask.dfhost.retention.failed", True),
    ]
    assert all(e.source.endswith("host.json") for e in errors)


def test_storage_settings_keep_their_problem_until_a_task_hub_uses_them() -> None:
    provider = {
        "type": "azureStorage",
        "connectionName": "Storage",
        "partitionCount": "3",
        "maxQueuePollingInterval": 2,
        "taskEventLockTimeout": "00:00:00",
    }
    storage = StorageProvider.from_host_json(durable(storageProvider=provider))
    assert (storage.type, storage.connection_name, storage.partition_count) == (
        "azureStorage",
        "Storage",
        3,
    )
    assert storage.max_queue_polling_interval == timedelta(seconds=2)
    assert isinstance(storage.task_event_lock_timeout, SettingsError)
    with pytest.raises(SettingsError, match="taskEventLockTimeout '00:00:00' must be a positive"):
        valid(storage.task_event_lock_timeout)
    # Functions 1.x put durableTask at the root.
    legacy = StorageProvider.from_host_json({"durableTask": {"storageProvider": provider}})
    assert legacy.connection_name == "Storage"
    assert "host.json durableTask.storageProvider" in str(legacy.task_event_lock_timeout)


def test_local_settings_values_feed_overrides_and_hub_name_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {"DFHOST_TEST_HUB": "FromValues", OVERRIDE + "extendedSessionsEnabled": "false"}
    monkeypatch.delenv("DFHOST_TEST_HUB", raising=False)
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": values}))
    settings = settings_of(tmp_path, durable(hubName="%DFHOST_TEST_HUB%"))
    assert (settings.hub_name, settings.extended_sessions) == ("FromValues", False)


def test_a_problem_two_readers_meet_is_one_line(tmp_path: Path) -> None:
    settings, errors = load_settings(app(tmp_path, durable(dfhost="on")))
    assert (settings.limits, settings.operations.retention) == (Limits(), None)
    assert [(e.message, e.fatal) for e in errors] == [
        ("extensions.durableTask.dfhost must be an object", True)
    ]


# --- shutdownTimeout and --drain ---------------------------------------------------------------


def test_the_shutdown_timeout_is_30_seconds_unless_host_json_says_otherwise(tmp_path: Path) -> None:
    assert settings_of(tmp_path, {}).operations.shutdown_timeout == 30.0
    section = {"dfhost": {"ShutdownTimeout": "00:02:00"}}  # keys in any casing, as in .NET
    assert settings_of(tmp_path, durable(**section)).operations.shutdown_timeout == 120.0
    zero = {"dfhost": {"shutdownTimeout": "00:00:00"}}  # hand everything over at once
    assert settings_of(tmp_path, durable(**zero)).operations.shutdown_timeout == 0.0


def test_an_environment_override_sets_the_shutdown_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "AzureFunctionsJobHost__extensions__durableTask__dfhost__shutdownTimeout"
    monkeypatch.setenv(name, "00:00:05")
    assert settings_of(tmp_path, {}).operations.shutdown_timeout == 5.0


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("-00:00:05", "must not be negative"),
        (30, "is not a duration like 00:00:30"),
        ("30s", "is not a duration like 00:00:30"),
    ],
)
def test_a_bad_shutdown_timeout_is_one_fatal_line(
    tmp_path: Path, value: object, problem: str
) -> None:
    folder = app(tmp_path, durable(dfhost={"shutdownTimeout": value}))
    _, errors = load_settings(folder)
    assert len(errors) == 1
    assert errors[0].fatal
    assert "extensions.durableTask.dfhost.shutdownTimeout" in errors[0].message
    assert problem in errors[0].message
    assert "\n" not in errors[0].message


@pytest.mark.parametrize(("text", "seconds"), [("0", 0.0), ("2.5", 2.5), (" 90 ", 90.0)])
def test_the_drain_flag_takes_seconds(text: str, seconds: float) -> None:
    assert parse_drain_flag(text) == seconds


@pytest.mark.parametrize("text", ["", "-1", "abc", "nan", "inf", "00:00:30", "1e300"])
def test_a_bad_drain_flag_is_refused_with_one_line(text: str) -> None:
    with pytest.raises(SettingsError, match=r"^--drain .*: expected a number of seconds"):
        parse_drain_flag(text)
