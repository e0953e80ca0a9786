"""The dashboard's form tokens: a state-changing form must come from a page this host served.

`AccessGuard` (web/auth.py) puts the session's token in the request scope when keys are
enforced; the dashboard writes it into every form and checks it on every action. Without keys
there is no session to bind a token to, and the guard's cross-site check stands alone.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from starlette.requests import Request

__all__ = ["CSRF_FIELD", "CSRF_SCOPE_KEY", "ForbiddenError", "check_csrf", "csrf_token"]

CSRF_FIELD = "csrf"
CSRF_SCOPE_KEY = "dfhost.csrf"


class ForbiddenError(Exception):
    """The request is refused (403 with this message)."""


def csrf_token(request: Request) -> str:
    """The token the dashboard's forms carry ("" when keys are not enforced)."""
    token = request.scope.get(CSRF_SCOPE_KEY)
    return token if isinstance(token, str) else ""


def check_csrf(request: Request, form: Mapping[str, Sequence[str]]) -> None:
    """Raise `ForbiddenError` unless a dashboard form carries this session's token."""
    expected = csrf_token(request)
    if not expected:
        return
    given = (form.get(CSRF_FIELD) or [""])[0]
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
        raise ForbiddenError(
            "This form is not from this dashboard session (missing or stale csrf token): "
            "reload the page and try again."
        )
