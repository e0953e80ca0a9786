"""Status filters: one reading for the management API, the dashboard and the CLI."""

from __future__ import annotations

import pytest

from dfhost.history import OrchestrationStatus as Status
from dfhost.history import parse_statuses


def test_names_in_any_case_with_blanks_and_repeats() -> None:
    found = parse_statuses(["completed, FAILED,,", "Running", "failed"], "status")
    assert found == (Status.COMPLETED, Status.FAILED, Status.RUNNING)


def test_nothing_given_is_no_filter() -> None:
    assert parse_statuses([], "status") == ()
    assert parse_statuses(["", " , "], "status") == ()


def test_an_unknown_name_is_reported_with_the_field_and_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"^--status 'Sleeping' is not one of: Pending, Running"):
        parse_statuses(["Running,Sleeping"], "--status")
