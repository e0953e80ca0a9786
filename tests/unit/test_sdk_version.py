"""Replay patches the SDK's internals, so only tested SDK versions are allowed."""

from __future__ import annotations

import importlib.metadata

import pytest

from dfhost.orchestration import sdk


def test_the_installed_sdk_is_a_tested_version() -> None:
    problem = sdk.sdk_version_problem()
    assert problem is None, (
        f"{problem}. To support it: run tests/unit/test_replay*.py and tests/engine against it, "
        "fix what breaks, then add its minor version to TESTED_SDK_MINORS and widen the "
        "azure-functions-durable pin in pyproject.toml."
    )


def test_an_untested_version_is_named_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.9.2")
    problem = sdk.sdk_version_problem()
    assert problem is not None
    assert problem.startswith("azure-functions-durable 1.9.2 is installed, but dfhost's replay")
    assert "tested with 1.7 only" in problem
    assert "TESTED_SDK_MINORS" in problem
