"""FUNCTIONS_WORKER_PROCESS_COUNT and PYTHON_THREADPOOL_THREAD_COUNT: app settings, so from
the environment or local.settings.json Values."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dfhost.config import default_worker_processes, load_settings


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("FUNCTIONS_WORKER_PROCESS_COUNT", raising=False)
    monkeypatch.delenv("PYTHON_THREADPOOL_THREAD_COUNT", raising=False)
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_unset_means_the_default_for_this_machine(tmp_path: Path) -> None:
    settings, errors = load_settings(tmp_path)
    assert errors == []
    assert settings.worker_processes == default_worker_processes()
    assert settings.worker_threads is None


@pytest.mark.parametrize(("cpus", "workers"), [(1, 0), (2, 0), (3, 1), (4, 2), (16, 8)])
def test_the_default_leaves_two_cores_to_the_host(cpus: int, workers: int) -> None:
    assert default_worker_processes(cpus) == workers


def test_read_from_local_settings_values(tmp_path: Path) -> None:
    values = {"FUNCTIONS_WORKER_PROCESS_COUNT": "3", "PYTHON_THREADPOOL_THREAD_COUNT": 5}
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": values}))
    settings, errors = load_settings(tmp_path)
    assert errors == []
    assert (settings.worker_processes, settings.worker_threads) == (3, 5)


def test_zero_workers_is_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNCTIONS_WORKER_PROCESS_COUNT", "0")
    assert load_settings(tmp_path)[0].worker_processes == 0


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("FUNCTIONS_WORKER_PROCESS_COUNT", "two", "is not a whole number from 0"),
        ("FUNCTIONS_WORKER_PROCESS_COUNT", "-1", "is not a whole number from 0"),
        ("FUNCTIONS_WORKER_PROCESS_COUNT", "65", "to 64"),
        ("PYTHON_THREADPOOL_THREAD_COUNT", "0", "is not a positive integer"),
    ],
)
def test_a_bad_value_is_one_line_and_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(name, value)
    settings, errors = load_settings(tmp_path)
    [error] = errors
    assert error.source == "app settings"
    assert error.message.startswith(f"{name} {value!r} ")
    assert problem in error.message
    assert not error.fatal
    assert settings.worker_processes == default_worker_processes()
    assert settings.worker_threads is None
