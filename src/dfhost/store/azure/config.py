"""Store URLs of the Azure Storage task hub, and how an app's host.json selects and tunes it.

`azure[:SETTING][?hub=NAME&partitions=N&control_timeout=S&workitem_timeout=S&max_poll=S]`:
the connection string is the value of app setting SETTING (default `AzureWebJobsStorage`).
No Azure SDK is imported here, so the CLI can resolve URLs without the optional packages.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from dfhost.config import SettingsError, StorageProvider, valid
from dfhost.store import StoreError

__all__ = [
    "DEFAULT_HUB",
    "DEFAULT_MAX_POLL",
    "DEFAULT_PARTITIONS",
    "DEFAULT_SETTING",
    "DEFAULT_VISIBILITY",
    "AzureTarget",
    "is_azure_url",
    "parse_url",
    "url_for_app",
]

log = logging.getLogger(__name__)

DEFAULT_HUB = "TestHubName"
DEFAULT_SETTING = "AzureWebJobsStorage"
DEFAULT_PARTITIONS = 4
DEFAULT_VISIBILITY = 30
"""Seconds a held queue message stays hidden after its holder dies."""
DEFAULT_MAX_POLL = 1.0
"""Seconds between polls of an idle host (the back-off's upper bound)."""
_HUB_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,44}$")
_SETTING_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")


@dataclass(frozen=True, slots=True)
class AzureTarget:
    setting: str
    connection_string: str
    hub: str
    partitions: int
    control_timeout: int
    workitem_timeout: int
    max_poll: float


def is_azure_url(url: str) -> bool:
    return url == "azure" or url.startswith(("azure:", "azure?"))


def _options(url: str) -> tuple[str, dict[str, str]]:
    base, _, query = url.partition("?")
    scheme, _, setting = base.partition(":")
    if scheme != "azure" or (setting and not _SETTING_RE.match(setting)):
        raise StoreError(f"invalid store URL {url!r}: expected azure or azure:SETTING_NAME")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise StoreError(f"invalid store URL {url!r}: malformed query string") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in options:
            raise StoreError(f"invalid store URL {url!r}: {key!r} given more than once")
        options[key] = value
    return base, options


def parse_url(url: str) -> AzureTarget:
    """Raises StoreError with one line on a bad URL or a missing connection setting."""
    base, options = _options(url)
    setting = base.partition(":")[2] or DEFAULT_SETTING
    hub = options.pop("hub", DEFAULT_HUB)
    if not _HUB_RE.match(hub):
        raise StoreError(
            f"invalid store URL: hub {hub!r} must be 3-45 letters or digits, starting with a letter"
        )

    def number(key: str, default: float, low: float, high: float) -> float:
        text = options.pop(key, None)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (low <= value <= high):
            raise StoreError(f"invalid store URL: {key} {text!r} must be from {low:g} to {high:g}")
        return value

    partitions = number("partitions", DEFAULT_PARTITIONS, 1, 16)
    if partitions != int(partitions):
        raise StoreError("invalid store URL: partitions must be a whole number from 1 to 16")
    control = number("control_timeout", DEFAULT_VISIBILITY, 5, 3600)
    workitem = number("workitem_timeout", DEFAULT_VISIBILITY, 5, 3600)
    max_poll = number("max_poll", DEFAULT_MAX_POLL, 0.1, 60)
    if options:
        raise StoreError(f"invalid store URL {url!r}: unsupported option {sorted(options)[0]!r}")
    connection = os.environ.get(setting, "").strip()
    if not connection:
        raise StoreError(
            f"the Azure Storage task hub needs a connection string in app setting {setting!r} "
            "(local.settings.json Values or the environment; UseDevelopmentStorage=true for "
            "Azurite)"
        )
    return AzureTarget(
        setting=setting,
        connection_string=connection,
        hub=hub,
        partitions=int(partitions),
        control_timeout=int(control),
        workitem_timeout=int(workitem),
        max_poll=max_poll,
    )


def url_for_app(url: str | None, default: str, hub_name: str, storage: StorageProvider) -> str:
    """The task hub URL of an app: `url` (`--store`) if given, else an `azure` URL when
    host.json's `extensions.durableTask.storageProvider.type` is `azureStorage`, else
    `default`. An azure URL gets the app's hub name and storageProvider settings
    (partitionCount, control/workItemQueueVisibilityTimeout, maxQueuePollingInterval) for the
    options it does not give itself."""
    if not url:  # `--store ''` is no --store
        if storage.type is None:
            return default
        if storage.type.lower() != "azurestorage":
            log.warning(
                "dfhost: host.json storageProvider.type %r is not supported here; using %s "
                "(choose a task hub with --store)",
                storage.type,
                default,
            )
            return default
        url = f"azure:{storage.connection_name or DEFAULT_SETTING}"
    if not is_azure_url(url):
        return url
    base, options = _options(url)
    options.setdefault("hub", hub_name)
    durations = (
        ("control_timeout", storage.control_queue_visibility_timeout),
        ("workitem_timeout", storage.work_item_queue_visibility_timeout),
        ("max_poll", storage.max_queue_polling_interval),
    )
    try:
        if "partitions" not in options and storage.partition_count is not None:
            options["partitions"] = str(valid(storage.partition_count))
        for option, duration in durations:
            if option not in options and duration is not None:
                options[option] = f"{valid(duration).total_seconds():g}"
    except SettingsError as exc:
        raise StoreError(str(exc)) from None
    return f"{base}?{urlencode(options)}"
