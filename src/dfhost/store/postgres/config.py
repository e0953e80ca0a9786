"""The PostgreSQL task hub's own URL options (`hub`, `takeover`), and how an app's host.json
fills them in.

psycopg is not imported here: the CLI resolves an app's store URL before the optional driver
is needed, and a missing driver is reported once, by `open_store`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit

from dfhost.store import StoreError

# The same lookup and TimeSpan rules as the Azure Storage provider's settings, so host.json
# durations read alike whichever task hub an app uses.
from dfhost.store.azure.config import _get_ci, _seconds

__all__ = [
    "DEFAULT_HUB",
    "DEFAULT_TAKEOVER",
    "TAKEOVER_SETTING",
    "HubUrl",
    "is_postgres_url",
    "parse_hub_url",
    "url_for_app",
]

DEFAULT_HUB = "TestHubName"
DEFAULT_TAKEOVER = timedelta(seconds=30)
TAKEOVER_SETTING = "taskEventLockTimeout"
"""host.json `extensions.durableTask.storageProvider` key for the takeover window: the MSSQL
provider's name for how long a crashed worker's work stays locked (its default is 2 minutes;
ours is 30 s, since our heartbeats tell a live host from a dead one)."""
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


def url_for_app(url: str, hub_name: str, host_json: Mapping[str, Any]) -> str:
    """`url` with the app's hub name and host.json takeover window for the options it does not
    give itself (the URL wins). Other URLs are returned as they are."""
    if not is_postgres_url(url):
        return url
    parsed = parse_hub_url(url)
    added: list[tuple[str, str]] = []
    if "hub" not in parsed.given:
        added.append(("hub", hub_name))
    if "takeover" not in parsed.given and (window := _host_json_takeover(host_json)) is not None:
        added.append(("takeover", window))
    if not added:
        return url
    # Appended, so the URL's own parameters keep their spelling (libpq reads `+` literally).
    query = "&".join(part for part in (parsed.parts.query, urlencode(added)) if part)
    return urlunsplit(parsed.parts._replace(query=query))


def _host_json_takeover(host_json: Mapping[str, Any]) -> str | None:
    durable = _get_ci(_get_ci(host_json, "extensions"), "durableTask")
    if durable is None:  # Functions 1.x puts it at the root
        durable = _get_ci(host_json, "durableTask")
    raw = _get_ci(_get_ci(durable, "storageProvider"), TAKEOVER_SETTING)
    if raw is None:
        return None
    seconds = _seconds(TAKEOVER_SETTING, raw)
    if _positive_seconds(seconds) is None:
        raise StoreError(
            f"host.json storageProvider.{TAKEOVER_SETTING} {raw!r} must be a positive duration "
            "like 00:00:30"
        )
    return seconds


def _positive_seconds(text: str) -> float | None:
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None
