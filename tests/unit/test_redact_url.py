"""Store URLs are printed (dfhost status, error messages, the test set-up) without passwords."""

from __future__ import annotations

import pytest

from dfhost.store import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://me:s3cr:et@db:5432/work?hub=A", "postgresql://me:***@db:5432/work?hub=A"),
        ("postgresql://me:p@ss@db/work", "postgresql://me:***@db/work"),
        ("postgresql://me@db/work", "postgresql://me@db/work"),
        ("sqlite:////var/lib/dfhost/taskhub.sqlite3", "sqlite:////var/lib/dfhost/taskhub.sqlite3"),
        ("azure:Storage?hub=A", "azure:Storage?hub=A"),
    ],
)
def test_only_the_password_is_hidden(url: str, shown: str) -> None:
    assert redact_url(url) == shown
