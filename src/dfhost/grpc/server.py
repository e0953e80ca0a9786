"""The gRPC server of `dfhost start --grpc-port` and `dfhost serve`: `TaskHubSidecarService`
with the same access rules as the HTTP surface.

On a loopback address no key is asked for (as over HTTP). Otherwise every call must carry a
key that opens the management API (the `durabletask_extension` system key or the master key)
as `x-functions-key` metadata, which the SDKs send with `metadata=[("x-functions-key", KEY)]`;
with certificate files the server speaks TLS only. Messages larger than the limit are refused
by gRPC itself with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc

from dfhost.client import DurableClient
from dfhost.grpc.service import TaskHubService
from dfhost.grpc.workers import WorkerHub

__all__ = ["KEY_METADATA", "GrpcOptions", "GrpcServerError", "start_grpc_server"]

log = logging.getLogger("dfhost.grpc")

KEY_METADATA = "x-functions-key"
"""The metadata carrying a key: the HTTP surface's header name."""

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""What one gRPC message may take each way: a whole history goes out in one work item."""


class GrpcServerError(Exception):
    """The gRPC server cannot start (port taken, unreadable certificate): one line."""


@dataclass(frozen=True, slots=True)
class GrpcOptions:
    host: str
    port: int
    keys: Sequence[str] | None = None
    """Keys any of which a call must carry; None: no key asked for."""
    certificate: Path | None = None
    private_key: Path | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


class _KeyCheck(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [k.encode() for k in keys]

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        details: Any,
    ) -> Any:
        presented = dict(details.invocation_metadata or ()).get(KEY_METADATA)
        if presented is not None and _matches(str(presented), self._keys):
            return await continuation(details)
        return _refusal(details.method)


def _matches(key: str, allowed: list[bytes]) -> bool:
    given = key.encode("utf-8", "surrogateescape")
    found = False
    for candidate in allowed:
        # No early exit: the time taken says nothing about which key (if any) matched.
        found |= hmac.compare_digest(given, candidate)
    return found


def _refusal(method: str) -> Any:
    message = (
        f"Unauthenticated: {method} needs the durabletask_extension system key or the master "
        f"key as '{KEY_METADATA}' metadata."
    )

    async def refuse(request: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def refuse_stream(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # an async generator, as a streaming method's handler is

    if method.endswith(("/GetWorkItems", "/StreamInstanceHistory")):
        return grpc.unary_stream_rpc_method_handler(refuse_stream)
    return grpc.unary_unary_rpc_method_handler(refuse)


async def start_grpc_server(
    client: DurableClient, workers: WorkerHub, options: GrpcOptions
) -> grpc.aio.Server:
    """Listen and serve; raises `GrpcServerError`. Stop it with `server.stop(grace)`."""
    interceptors = [] if options.keys is None else [_KeyCheck(options.keys)]
    size = options.max_message_bytes
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            # Workers hold a stream open for hours: keepalives find the dead ones.
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ],
    )
    service = TaskHubService(client, workers)
    pb_grpc.add_TaskHubSidecarServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    address = (
        f"[{options.host}]:{options.port}"
        if ":" in options.host
        else (f"{options.host}:{options.port}")
    )
    try:
        if options.certificate is not None and options.private_key is not None:
            credentials = grpc.ssl_server_credentials(
                [(options.private_key.read_bytes(), options.certificate.read_bytes())]
            )
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
    except OSError as exc:
        raise GrpcServerError(f"cannot read the TLS certificate or key: {exc}") from None
    except RuntimeError as exc:
        raise GrpcServerError(f"cannot listen for gRPC on {address}: {exc}") from None
    if not bound:
        raise GrpcServerError(f"cannot listen for gRPC on {address}")
    await server.start()
    scheme = "grpcs" if options.certificate is not None else "grpc"
    shown = f"[{options.host}]" if ":" in options.host else options.host
    # The port bound, which `--grpc-port 0` leaves to the system.
    log.info("dfhost: Durable Task gRPC on %s://%s:%d", scheme, shown, bound)
    return server
