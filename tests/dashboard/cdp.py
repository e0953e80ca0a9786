"""A tiny Chrome DevTools Protocol client: start Debian's headless Chromium, open a page, load
URLs, run JavaScript, accept dialogs, take screenshots. No browser download, no driver: the
protocol over one websocket (`websockets`), as Chromium prints its address on stderr.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websockets

CHROMIUM = "/usr/bin/chromium"
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")

Listener = Callable[[dict[str, Any]], None]


class BrowserError(RuntimeError):
    """Chromium could not be started or did not answer as expected."""


class Chromium:
    """One headless Chromium process; use as `async with Chromium(tmp) as browser`."""

    def __init__(self, profile: Path, startup_timeout: float = 30.0) -> None:
        self.profile = profile
        self.startup_timeout = startup_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr: list[str] = []
        self._ws: Any = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[tuple[str | None, str, Listener]] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Chromium:
        executable = shutil.which(CHROMIUM) or shutil.which("chromium")
        if executable is None:
            raise BrowserError(
                f"{CHROMIUM} is not installed: scripts/test installs it (apt-get install chromium)"
            )
        self.proc = await asyncio.create_subprocess_exec(
            executable,
            "--headless",
            "--remote-debugging-port=0",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--mute-audio",
            f"--user-data-dir={self.profile}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            url = await asyncio.wait_for(self._devtools_url(), self.startup_timeout)
        except TimeoutError:
            await self.close()
            raise BrowserError(
                f"Chromium printed no DevTools address within {self.startup_timeout:.0f} s:\n"
                + "\n".join(self.stderr[-30:])
            ) from None
        if url is None:
            await self.close()
            raise BrowserError("Chromium exited at startup:\n" + "\n".join(self.stderr[-30:]))
        self._tasks.append(asyncio.create_task(self._drain_stderr()))
        self._ws = await websockets.connect(url, max_size=None, ping_interval=None)
        self._tasks.append(asyncio.create_task(self._read()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _devtools_url(self) -> str | None:
        assert self.proc is not None and self.proc.stderr is not None
        while True:
            raw = await self.proc.stderr.readline()
            if not raw:
                return None
            line = raw.decode(errors="replace").rstrip()
            self.stderr.append(line)
            found = _LISTENING.search(line)
            if found:
                return found.group(1)

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while raw := await self.proc.stderr.readline():
            self.stderr.append(raw.decode(errors="replace").rstrip())

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            for session, method, listener in list(self._listeners):
                if method == message.get("method") and session == message.get("sessionId"):
                    listener(message.get("params", {}))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self._ws.send(json.dumps(message))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def on(self, session: str | None, method: str, listener: Listener) -> None:
        self._listeners.append((session, method, listener))

    async def new_page(self, width: int = 1366, height: int = 900) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Log.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Page:
    """One tab. Dialogs (`confirm`) are accepted, and their messages kept in `dialogs`."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        """Uncaught exceptions and console errors (a Content-Security-Policy refusal is one)."""
        self._loaded: asyncio.Future[None] | None = None
        browser.on(session, "Page.loadEventFired", self._on_load)
        browser.on(session, "Page.javascriptDialogOpening", self._on_dialog)
        browser.on(session, "Runtime.exceptionThrown", self._on_exception)
        browser.on(session, "Log.entryAdded", self._on_log)
        self._dialog_tasks: set[asyncio.Task[dict[str, Any]]] = set()

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session)

    def _on_load(self, _: dict[str, Any]) -> None:
        if self._loaded is not None and not self._loaded.done():
            self._loaded.set_result(None)

    def _on_exception(self, params: dict[str, Any]) -> None:
        details = params.get("exceptionDetails", {})
        self.errors.append(str(details.get("exception", {}).get("description") or details))

    def _on_log(self, params: dict[str, Any]) -> None:
        entry = params.get("entry", {})
        if entry.get("level") == "error":
            self.errors.append(f"{entry.get('source')}: {entry.get('text')} ({entry.get('url')})")

    def _on_dialog(self, params: dict[str, Any]) -> None:
        self.dialogs.append(str(params.get("message", "")))
        task = asyncio.create_task(self.send("Page.handleJavaScriptDialog", {"accept": True}))
        self._dialog_tasks.add(task)
        task.add_done_callback(self._dialog_tasks.discard)

    async def goto(self, url: str) -> None:
        self._loaded = asyncio.get_running_loop().create_future()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"loading {url}: {result['errorText']}")
        await asyncio.wait_for(self._loaded, 20)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def navigating(self, expression: str) -> None:
        """Run `expression` (a click, a submit) and wait until the page it leads to loaded."""
        self._loaded = asyncio.get_running_loop().create_future()
        await self.evaluate(expression)
        await asyncio.wait_for(self._loaded, 20)

    async def url(self) -> str:
        return str(await self.evaluate("location.href"))

    async def text(self, selector: str = "body") -> str:
        return str(await self.evaluate(f"document.querySelector({json.dumps(selector)}).innerText"))

    async def dark(self, on: bool) -> None:
        await self.send(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark" if on else "light"}]},
        )

    async def screenshot(self, path: Path) -> Path:
        """The whole page, not just the viewport, as a PNG file."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = await self.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
