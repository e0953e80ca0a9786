"""The PostgreSQL task hub's own URL options (`hub`, `takeover`), and how an app's host.json
fills them in.

psycopg is not imported here: the CLI resolves an app's store URL before the optional driver
is needed, and a missing driver is reported once, by `open_store`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit

from dfhost.config import SettingsError, StorageProvider, valid
from dfhost.store import StoreError

__all__ = [
    "DEFAULT_HUB",
    "DEFAULT_TAKEOVER",
    "HubUrl",
    "is_postgres_url",
    "parse_hub_url",
    "url_for_app",
]

DEFAULT_HUB = "TestHubName"
DEFAULT_TAKEOVER = timedelta(seconds=30)
"""How long a crashed host's work stays locked; host.json `storageProvider.taskEventLockTimeout`
sets it (the MSSQL provider's name and setting, whose default is 2 minutes: ours is 30 s, since
our heartbeats tell a live host from a dead one)."""
_OWN_OPTIONS = ("hub", "takeover")
_HUB_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,44}$")


@dataclass(frozen=True, slots=True)
class HubUrl:
    """A `postgresql://` URL split into dfhost's options and what is left for libpq."""

    parts: SplitResult
    hub: str
    takeover: timedelta
    libpq: list[tuple[str, str]]
    """The other query parameters, in order."""
    given: frozenset[str]
    """Which of dfhost's options the URL gave itself."""

    def libpq_url(self) -> str:
        """The URL without dfhost's options."""
        query = urlencode(self.libpq, quote_via=quote)
        return urlunsplit((self.parts.scheme, self.parts.netloc, self.parts.path, query, ""))


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql:", "postgres:"))


def parse_hub_url(url: str) -> HubUrl:
    """Raises StoreError with one line on a bad scheme, query string, hub or takeover."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreError(f"invalid store URL: expected postgresql://..., got {parts.scheme}://")
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise StoreError("invalid store URL: malformed query string") from None
    hub, takeover = DEFAULT_HUB, DEFAULT_TAKEOVER
    libpq: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key, value in query:
        if key not in _OWN_OPTIONS:
            libpq.append((key, value))
            continue
        if key in seen:
            raise StoreError(f"invalid store URL: {key!r} given more than once")
        seen.add(key)
        if key == "hub":
            if not _HUB_RE.match(value):
                raise StoreError(
                    f"invalid store URL: hub {value!r} must be 3-45 letters or digits, "
                    "starting with a letter"
                )
            hub = value
        else:
            seconds = _positive_seconds(value)
            if seconds is None:
                raise StoreError(
                    f"invalid store URL: takeover {value!r} must be a positive number of seconds"
                )
            takeover = timedelta(seconds=seconds)
    return HubUrl(parts, hub, takeover, libpq, frozenset(seen))


def url_for_app(url: str, hub_name: str, storage: StorageProvider) -> str:
    """`url` with the app's hub name and host.json takeover window for the options it does not
    give itself (the URL wins). Other URLs are returned as they are."""
    if not is_postgres_url(url):
        return url
    parsed = parse_hub_url(url)
    added: list[tuple[str, str]] = []
    if "hub" not in parsed.given:
        added.append(("hub", hub_name))
    if "takeover" not in parsed.given and storage.task_event_lock_timeout is not None:
        try:
            window = valid(storage.task_event_lock_timeout)
        except SettingsError as exc:
            raise StoreError(str(exc)) from None
        added.append(("takeover", f"{window.total_seconds():g}"))
    if not added:
        return url
    # Appended, so the URL's own parameters keep their spelling (libpq reads `+` literally).
    query = "&".join(part for part in (parsed.parts.query, urlencode(added)) if part)
    return urlunsplit(parsed.parts._replace(query=query))


def _positive_seconds(text: str) -> float | None:
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None
