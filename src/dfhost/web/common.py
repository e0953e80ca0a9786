"""Request helpers shared by the management API and the HTTP triggers."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import quote

from starlette.requests import Request

__all__ = [
    "BadRequestError",
    "BodyTooLargeError",
    "json_bytes",
    "log_has_it",
    "logged_error",
    "origin_of",
    "raw_path",
    "read_body",
    "url_of",
]


class BodyTooLargeError(Exception):
    """The request body is larger than the configured limit (answer 413)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"The request body is larger than the limit of {limit} bytes.")


class BadRequestError(Exception):
    """The request is malformed (answer 400 with this message)."""


def json_bytes(content: Any, indent: int | None = None) -> bytes:
    """UTF-8 JSON, NaN included (the SDK writes and reads it); ASCII with escapes when a string
    holds an unpaired surrogate (stored by user code), which has no UTF-8 encoding."""
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(content, ensure_ascii=False, indent=indent, separators=separators)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(content, indent=indent, separators=separators).encode("ascii")


def logged_error(log: logging.Logger, message: str, *args: object, trace: bool = False) -> str:
    """Log an unexpected error under a new short id and return the id, for the answer: the
    caller gets the id, the log the error (a store's error names its URL, user and host,
    which never go to a caller). `message` and `args` as for `log.error`; `trace` adds the
    traceback of the exception being handled."""
    incident = uuid.uuid4().hex[:12]
    log.error(f"{message} (error id %s)", *args, incident, exc_info=trace)
    return incident


def log_has_it(incident: str) -> str:
    """The end of an answer to an unexpected error."""
    return f"the host's log has why (error id {incident})"


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing it early by Content-Length and again while streaming (the
    header may be absent with chunked encoding, or lie)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequestError(f"Invalid Content-Length header {declared!r}.") from None
        if size < 0:
            raise BadRequestError(f"Invalid Content-Length header {declared!r}.")
        if size > limit:
            raise BodyTooLargeError(limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLargeError(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def origin_of(request: Request) -> str:
    """scheme://host[:port] as the caller addressed us, for URLs we hand back to it."""
    url = request.url
    return f"{url.scheme}://{url.netloc}"


def raw_path(request: Request) -> str:
    """The path as sent, still percent-encoded (Starlette's `url.path` is decoded)."""
    raw = request.scope.get("raw_path")
    if not raw:
        return quote(request.scope["path"])
    # Some ASGI servers (httpx's test transport) include the query string in raw_path.
    return str(raw.decode("latin-1")).split("?", 1)[0]


def url_of(request: Request) -> str:
    """The absolute URL as the caller sent it (encoding preserved)."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{origin_of(request)}{raw_path(request)}{'?' + query if query else ''}"
