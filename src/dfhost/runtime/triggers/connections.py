"""The clients of the services that triggers and bindings reach, opened on first use, shared by
every function of the host that names the same connection, and closed together.

A binding names its connection the way Azure's do: the name of an app setting holding the
connection string (`connection`, `connectionStringSetting`); `config.connection_setting`
looks it up (NAME, then AzureWebJobsNAME; Azure Storage defaults to AzureWebJobsStorage).
The RabbitMQ and Redis clients are optional packages (`dfhost[rabbitmq]`, `dfhost[redis]`):
a function that needs a missing one fails with one line saying what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from dfhost.config import RabbitMQSettings, connection_setting

if TYPE_CHECKING:
    import httpx
    from aio_pika.abc import AbstractRobustConnection
    from azure.storage.blob.aio import BlobServiceClient
    from azure.storage.queue.aio import QueueServiceClient
    from redis.asyncio import Redis

__all__ = ["ConnectionSettingError", "Connections", "redis_url", "require_package"]

log = logging.getLogger("dfhost.triggers")
T = TypeVar("T")


class ConnectionSettingError(RuntimeError):
    """A connection that cannot be made from the settings; one line naming the setting."""


def require_package(module: str, extra: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ConnectionSettingError(
            f"this binding needs the Python package of {extra}: pip install 'dfhost[{extra}]'"
        ) from None


class Connections:
    """Clients by connection string; use from one event loop."""

    def __init__(self, rabbitmq: RabbitMQSettings | None = None) -> None:
        self.rabbitmq_settings = rabbitmq or RabbitMQSettings()
        self._queues: dict[str, QueueServiceClient] = {}
        self._blobs: dict[str, BlobServiceClient] = {}
        self._redis: dict[str, Redis] = {}
        self._amqp: dict[str, AbstractRobustConnection] = {}
        self._http: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    # --- Azure Storage -------------------------------------------------------------------
    def storage_string(self, name: str | None) -> str:
        value = connection_setting(name)
        if value is None:
            setting = name or "AzureWebJobsStorage"
            raise ConnectionSettingError(
                f"app setting {setting!r} (the binding's storage connection) is not set; "
                "UseDevelopmentStorage=true means Azurite"
            )
        return value

    def queue_service(self, name: str | None) -> QueueServiceClient:
        require_package("azure.storage.queue", "azure")
        from azure.storage.queue.aio import QueueServiceClient

        return self._storage(self._queues, name, QueueServiceClient.from_connection_string)

    def blob_service(self, name: str | None) -> BlobServiceClient:
        require_package("azure.storage.blob", "azure")
        from azure.storage.blob.aio import BlobServiceClient

        return self._storage(self._blobs, name, BlobServiceClient.from_connection_string)

    def _storage(self, cache: dict[str, T], name: str | None, make: Callable[[str], T]) -> T:
        text = self.storage_string(name)
        client = cache.get(text)
        if client is None:
            # The SDKs log every request and response at INFO.
            logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(
                logging.WARNING
            )
            client = cache[text] = make(text)
        return client

    # --- RabbitMQ ------------------------------------------------------------------------
    def amqp_url(self, settings: Mapping[str, Any]) -> str:
        """The AMQP URL of a RabbitMQ trigger or output binding: its connectionStringSetting
        (an app setting holding amqp://...), else hostName/port and the user and password app
        settings, each falling back to host.json extensions.rabbitMQ."""
        defaults = self.rabbitmq_settings
        setting = settings.get("connectionStringSetting") or settings.get("connection")
        if setting:
            value = connection_setting(str(setting))
            if value is None:
                raise ConnectionSettingError(
                    f"app setting {setting!r} (the RabbitMQ connectionStringSetting) is not set"
                )
            return value
        if defaults.connection_string:
            return defaults.connection_string
        host = settings.get("hostName") or defaults.host_name
        if not host:
            raise ConnectionSettingError(
                "RabbitMQ binding without a connection: set connectionStringSetting to the name "
                "of an app setting holding amqp://user:password@host:5672/"
            )

        def secret(key: str, default: str | None) -> str:
            name = settings.get(key)
            value = connection_setting(str(name)) if name else None
            return value or default or "guest"

        user = secret("userNameSetting", defaults.user_name)
        password = secret("passwordSetting", defaults.password)
        port = settings.get("port") or defaults.port or 5672
        return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/"

    async def amqp(self, url: str) -> AbstractRobustConnection:
        """A connection shared by output bindings (triggers open their own)."""
        async with self._lock:
            connection = self._amqp.get(url)
            if connection is None or connection.is_closed:
                aio_pika = require_package("aio_pika", "rabbitmq")
                connection = self._amqp[url] = await aio_pika.connect_robust(url, timeout=10)
            return connection

    # --- Redis ---------------------------------------------------------------------------
    def redis_string(self, settings: Mapping[str, Any]) -> str:
        setting = settings.get("connection") or settings.get("connectionStringSetting")
        if not setting:
            raise ConnectionSettingError(
                "Redis binding without a connection: set connection (or connectionStringSetting) "
                "to the name of an app setting holding the Redis connection string"
            )
        value = connection_setting(str(setting))
        if value is None:
            raise ConnectionSettingError(
                f"app setting {setting!r} (the Redis connection) is not set"
            )
        return value

    def redis(self, connection_string: str) -> Redis:
        client = self._redis.get(connection_string)
        if client is None:
            redis_asyncio = require_package("redis.asyncio", "redis")
            client = self._redis[connection_string] = redis_asyncio.from_url(
                redis_url(connection_string), decode_responses=False
            )
        return client

    # --- HTTP (Event Grid topics) --------------------------------------------------------
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(timeout=30)
        return self._http

    async def close(self) -> None:
        clients: list[Any] = [*self._queues.values(), *self._blobs.values()]
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
        for redis_client in self._redis.values():
            with contextlib.suppress(Exception):
                await redis_client.aclose()
        for connection in self._amqp.values():
            with contextlib.suppress(Exception):
                await connection.close()
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()
        self._queues.clear()
        self._blobs.clear()
        self._redis.clear()
        self._amqp.clear()
        self._http = None


def redis_url(connection_string: str) -> str:
    """A redis:// URL for a connection string: URLs as they are; StackExchange.Redis strings
    (`host:port,password=...,ssl=True,abortConnect=False`, what Azure hands out) converted."""
    text = connection_string.strip()
    if text.startswith(("redis://", "rediss://", "unix://")):
        return text
    parts = [p.strip() for p in text.split(",") if p.strip()]
    endpoint = next((p for p in parts if "=" not in p), "localhost:6379")
    options = {
        k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in parts if "=" in p)
    }
    scheme = "rediss" if options.get("ssl", "").lower() == "true" else "redis"
    user = options.get("user", "")
    password = options.get("password", "")
    auth = ""
    if password:
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    host, _, port = endpoint.rpartition(":") if ":" in endpoint else (endpoint, "", "6379")
    return f"{scheme}://{auth}{host}:{port or 6379}/{options.get('defaultdatabase', '0')}"
