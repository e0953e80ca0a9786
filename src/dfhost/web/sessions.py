"""The dashboard's login sessions: signed cookies that a logout revokes on every host.

A session cookie is `ISSUED.EXPIRES.ID.MAC`: when it was issued (microseconds since the epoch),
when it expires (seconds), a random id, and an HMAC of the three under the master key. So any
host with the same master key accepts it, and a new master key ends every session.

A signature alone cannot be taken back, so revocations are kept in the task hub, which every
host sharing it reads: "log out" records the session's id (until the session would have
expired anyway), "log out everywhere" the time before which no session is valid. Each
dashboard request with a cookie reads both, so a logout holds at once on every host, and
across restarts. The store has no table of its own for them: they are records of the timer
table (`Store.get_timer_status`), under names that no function can have (function names
start with a letter), which every backend keeps the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from dfhost.store import Store, TimerStatus

__all__ = ["SESSION_SECONDS", "Session", "SessionBook", "mac"]

SESSION_SECONDS = 12 * 3600
_EVERYWHERE = "$dashboard:logout-everywhere"
_REVOKED = "$dashboard:logout:"


def mac(key: str, purpose: str, value: str) -> str:
    """An HMAC-SHA256 of `value` for `purpose` under `key`, URL-safe base64."""
    digest = hmac.new(key.encode(), f"dfhost|{purpose}|{value}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class Session:
    issued_us: int
    """Microseconds since the epoch."""
    expires: int
    """Seconds since the epoch."""
    id: str

    def cookie(self, key: str) -> str:
        body = f"{self.issued_us}.{self.expires}.{self.id}"
        return f"{body}.{mac(key, 'dashboard-session', body)}"

    @classmethod
    def issue(cls, key: str, now: float | None = None) -> str:
        """A new session's cookie, valid for `SESSION_SECONDS`."""
        now = time.time() if now is None else now
        session = cls(round(now * 1_000_000), int(now + SESSION_SECONDS), secrets.token_hex(12))
        return session.cookie(key)

    @classmethod
    def of(cls, cookie: str | None, key: str, now: float | None = None) -> Session | None:
        """The session of a cookie signed with `key` and not expired; None for any other."""
        if not cookie:
            return None
        body, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(
            signature.encode(), mac(key, "dashboard-session", body).encode()
        ):
            return None
        parts = body.split(".")
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit() and parts[2]):
            return None
        issued, expires, session_id = parts
        if int(expires) <= (time.time() if now is None else now):
            return None
        return cls(int(issued), int(expires), session_id)


class SessionBook:
    """The revocations of one task hub."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def revoked(self, session: Session) -> bool:
        """Whether the session was logged out, alone or everywhere (reads the store)."""
        everywhere = await self.store.get_timer_status(_EVERYWHERE)
        last = everywhere.last if everywhere is not None else None
        if last is not None and session.issued_us <= _microseconds(last):
            return True
        return await self.store.get_timer_status(_REVOKED + session.id) is not None

    async def revoke(self, session: Session) -> None:
        now = _utc(self.clock())
        expires = _utc(float(session.expires))
        await self.store.set_timer_status(
            _REVOKED + session.id, TimerStatus(last=now, next=expires, last_updated=now)
        )

    async def revoke_all(self) -> None:
        """End every session issued until now, on every host sharing the task hub."""
        now = _utc(self.clock())
        await self.store.set_timer_status(
            _EVERYWHERE, TimerStatus(last=now, next=now, last_updated=now)
        )


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _microseconds(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
