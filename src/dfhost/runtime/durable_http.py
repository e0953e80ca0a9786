"""Durable HTTP: `context.call_http(...)` runs as the built-in activity `BuiltIn::HttpActivity`.

The orchestrator's request (`{"method", "uri", "content", "headers", "tokenSource"?}`, the SDK's
DurableHttpRequest JSON) is the activity input; the result is `{"statusCode", "headers",
"content"}`, which the SDK hands to the orchestrator as a dict. Any status is a result; only a
request that gets no answer (bad URL, connection refused, timeout) fails the task.

The extension's asynchronous pattern is on, as it is for every Python app: while the answer is
`202 Accepted` with a `Location` header, the Location is polled with GET (the original headers
included) after the `Retry-After` delay, else after host.json's
`extensions.durableTask.httpSettings.defaultAsyncRequestSleepTimeMilliseconds` (30 s by
default; `app.settings.http`), and the first other answer is the result. The extension waits
with durable timers in the orchestration; dfhost polls inside the activity instead (the SDK's
task ids leave no room for extra timers), so a host that stops mid-poll sends the first request
again, as for any activity (at least once). Polling gives up after a day with a failed task.

Managed-identity token sources need Azure to issue tokens: such calls fail with a clear error.
A failed call reads as on Azure: the reason is the error's message, without the "Activity
function ... failed:" of other activities, and the details are the .NET exception's JSON
(`dfhost.orchestration.failures`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin

import httpx

from dfhost.config import HttpSettings
from dfhost.history import EventType, HistoryEvent
from dfhost.orchestration import failures
from dfhost.orchestration.episode import HTTP_ACTIVITY
from dfhost.work import ActivityTask

__all__ = ["ACTIVITY_NAME", "HttpSettings", "run"]

log = logging.getLogger("dfhost.http")

_HTTP_REQUEST_EXCEPTION = "System.Net.Http.HttpRequestException, System.Net.Http"
_CANCELED = "System.Threading.Tasks.TaskCanceledException"

ACTIVITY_NAME = HTTP_ACTIVITY


class _CallFailedError(Exception):
    pass


async def run(
    task: ActivityTask,
    now: Callable[[], datetime],
    settings: HttpSettings,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> HistoryEvent:
    """Make the call (and its polls); the TaskCompleted or TaskFailed that answers the task."""
    try:
        result = await _call(_request(task.input), settings, sleep)
    except _CallFailedError as exc:  # a call dfhost does not make
        return _failed(task, now(), str(exc), _details(failures.SYSTEM_EXCEPTION, exc))
    except httpx.TimeoutException:
        # What .NET's HttpClient says at its timeout: not an HttpRequestException, so it reaches
        # DTFx, which writes its own details.
        reason = (
            "The request was canceled due to the configured HttpClient.Timeout of "
            f"{settings.request_timeout:g} seconds elapsing."
        )
        details = f"Unhandled exception while executing task: {_CANCELED}: {reason}"
        return _failed(task, now(), reason, details)
    except Exception as exc:  # no answer (refused, bad URL): an HttpRequestException
        reason = _request_error(exc)
        return _failed(task, now(), reason, _details(_HTTP_REQUEST_EXCEPTION, reason))
    return HistoryEvent(
        type=EventType.TASK_COMPLETED,
        timestamp=now(),
        task_scheduled_id=task.task_scheduled_id,
        result=json.dumps(result),
    )


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    uri: str
    content: str | None
    headers: dict[str, str]


def _request(text: str | None) -> _Request:
    try:
        data = json.loads(text or "")
    except json.JSONDecodeError as exc:
        raise _CallFailedError(f"the request is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _CallFailedError("the request is not a JSON object")
    source = data.get("tokenSource")
    if source:
        resource = source.get("resource") if isinstance(source, dict) else None
        raise _CallFailedError(
            f"call_http with a managed identity token source (resource {resource!r}) needs "
            "Azure to issue the token, and dfhost does not run in Azure; get a token yourself "
            "and pass it in an Authorization header instead"
        )
    method, uri = data.get("method"), data.get("uri")
    if not isinstance(method, str) or not method or not isinstance(uri, str) or not uri:
        raise _CallFailedError("the request needs a method and a uri")
    if not uri.lower().startswith(("http://", "https://")):
        raise _CallFailedError(f"the uri {uri!r} is not an absolute http:// or https:// URL")
    content = data.get("content")
    headers = data.get("headers") or {}
    if not isinstance(headers, dict):
        raise _CallFailedError("the request headers are not a JSON object")
    return _Request(
        method=method.upper(),
        uri=uri,
        content=content if isinstance(content, str) else None,
        headers={str(k): str(v) for k, v in headers.items()},
    )


async def _call(
    request: _Request, settings: HttpSettings, sleep: Callable[[float], Awaitable[None]]
) -> dict[str, Any]:
    deadline = time.monotonic() + settings.polling_limit
    timeout = httpx.Timeout(settings.request_timeout)
    # .NET's HttpClient follows redirects; so does the extension's durable HTTP.
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as http:
        response = await _send(http, request.method, request.uri, request.content, request.headers)
        while response.status_code == 202 and "location" in response.headers:
            delay = _retry_after(response.headers.get("retry-after"), settings.poll_interval)
            if time.monotonic() + delay > deadline:
                raise _CallFailedError(
                    f"{request.method} {request.uri} was still 202 Accepted after polling "
                    f"{response.headers['location']} for {settings.polling_limit:.0f} s"
                )
            await sleep(delay)
            location = urljoin(str(response.url), response.headers["location"])
            response = await _send(http, "GET", location, None, request.headers)
    log.info("dfhost: call_http %s %s -> %d", request.method, request.uri, response.status_code)
    return {
        "statusCode": response.status_code,
        "headers": _headers(response),
        "content": response.text,
    }


async def _send(
    http: httpx.AsyncClient, method: str, uri: str, content: str | None, headers: dict[str, str]
) -> httpx.Response:
    headers = dict(headers)
    if content is not None and not any(k.lower() == "content-type" for k in headers):
        # The extension sends content as .NET StringContent, whose default this is.
        headers["Content-Type"] = "text/plain; charset=utf-8"
    body = content.encode("utf-8") if content is not None else None
    return await http.request(method, uri, content=body, headers=headers)


def _retry_after(value: str | None, default: float) -> float:
    if value is None or not value.strip():
        return default
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _headers(response: httpx.Response) -> dict[str, str | list[str]]:
    # One string per header, a list when it came several times (.NET's StringValues).
    out: dict[str, str | list[str]] = {}
    for raw_name, raw_value in response.headers.raw:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        previous = out.get(name)
        if previous is None:
            out[name] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            out[name] = [previous, value]
    return out


def _request_error(exc: Exception) -> str:
    """The message .NET gives the same failure, e.g. "Connection refused (example.com:80)"."""
    text = re.sub(r"^\[Errno -?\d+\] ", "", str(exc)) or type(exc).__name__
    try:
        request = exc.request if isinstance(exc, httpx.HTTPError) else None
    except RuntimeError:  # httpx raises when the error has no request attached
        request = None
    if request is None:
        return text
    url = request.url
    return f"{text} ({url.host}:{url.port or (443 if url.scheme == 'https' else 80)})"


def _details(type_name: str, message: object) -> str:
    return failures.serialized(failures.net_exception(type_name, str(message)))


def _failed(task: ActivityTask, now: datetime, reason: str, details: str) -> HistoryEvent:
    # As the extension's TaskHttpActivityShim: the reason is the error's message alone.
    log.warning("dfhost: call_http of %s failed: %s", task.instance_id, reason)
    return task.failed_event(now, reason, details)
