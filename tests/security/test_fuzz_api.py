"""Schemathesis against a live `dfhost start` (engine included): every operation of the
management API's OpenAPI document, with generated paths, queries, headers and bodies, must
never answer a 5xx, and the host must still be up afterwards."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.security.conftest import APP_DIR, BASE
from tests.security.host import Host

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("DFHOST_FUZZ_EXAMPLES", "40"))
"""Per operation (17 operations): about 700 requests by default."""


def test_management_api_never_answers_5xx(tmp_path: Path) -> None:
    # Schemathesis' pytest plugin (from_fixture) does not run under pytest 9: drive each
    # operation's Hypothesis strategy directly.
    with Host(APP_DIR, "--store", f"sqlite:///{tmp_path / 'hub.sqlite3'}") as host:
        schema = schemathesis.openapi.from_url(f"{host.origin}{BASE}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(operations) == 17
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: schemathesis.Case[Any]) -> None:
                case.call_and_validate(checks=[not_a_server_error], timeout=10)

            fuzz()
        assert host.proc is not None and host.proc.poll() is None, host.output
        assert "Traceback" not in host.output, host.output
