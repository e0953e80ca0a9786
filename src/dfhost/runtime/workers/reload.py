"""`dfhost start --reload`: when a file of the app changes, load the new code and switch to it.

The folder is polled (the size and modification time of its .py and .json files, twice a
second): no file-watching dependency, and it works the same on every file system, network and
container mounts included. A change first loads in the host (its orchestrators run there);
if that reports a problem the previous load did not have (a syntax error, an import that
fails), the problem is logged and everything keeps running the previous code. Otherwise new
worker processes load it and take over (`WorkerPool.reload`), the engine runs the new
orchestrators, and the caller's `on_reload` callbacks switch the rest of the host (HTTP, timer
and message triggers; they live in layers above this one) to the new app.

Settings are read once (config.py): the new app keeps the settings the host started with, so
every part of the host goes on agreeing on them, and a change to host.json or
local.settings.json is logged as needing a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from dfhost.app.functions import FunctionApp
from dfhost.app.loader import load_app
from dfhost.config import AppLoadError, LoadError
from dfhost.runtime.engine import Engine
from dfhost.runtime.workers.pool import WorkerPool

__all__ = ["OnReload", "reload_on_change", "snapshot"]

log = logging.getLogger("dfhost.reload")

_WATCHED = (".py", ".json")
_SETTINGS_FILES = ("host.json", "local.settings.json")
_SKIPPED = {"__pycache__", "node_modules"}
POLL_SECONDS = 0.5

Snapshot = dict[str, tuple[int, int]]

OnReload = Callable[[FunctionApp], Awaitable[None]]
"""Switches a part of the host to the reloaded app, after the engine switched."""


def snapshot(root: Path) -> Snapshot:
    """path -> (size, mtime in ns) of the app's files a reload cares about (hidden folders,
    such as .venv and the hub's .dfhost, left out)."""
    found: Snapshot = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIPPED]
        for name in files:
            if name.endswith(_WATCHED):
                path = os.path.join(folder, name)
                try:
                    stat = os.stat(path)
                except OSError:  # removed while we looked
                    continue
                found[path] = (stat.st_size, stat.st_mtime_ns)
    return found


def _changed(before: Snapshot, after: Snapshot, root: Path) -> list[str]:
    paths = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    return sorted(os.path.relpath(p, root) for p in paths)


async def reload_on_change(
    engine: Engine, workers: WorkerPool | None, on_reload: Sequence[OnReload] = ()
) -> None:
    """Until cancelled: reload `engine.app` (and `workers`, then `on_reload`, read at each
    reload) whenever its files change."""
    root = engine.app.root
    seen = await asyncio.to_thread(snapshot, root)
    while True:
        await asyncio.sleep(POLL_SECONDS)
        now = await asyncio.to_thread(snapshot, root)
        if now == seen:
            continue
        changed = _changed(seen, now, root)
        seen = now
        await _reload(engine, workers, on_reload, changed)


async def _reload(
    engine: Engine, workers: WorkerPool | None, on_reload: Sequence[OnReload], changed: list[str]
) -> None:
    what = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    log.info("dfhost: %s changed; reloading", what)
    if settings := [name for name in _SETTINGS_FILES if name in changed]:
        log.warning(
            "dfhost: %s changed: restart dfhost for %s settings to apply (a reload applies code)",
            " and ".join(settings),
            "its" if len(settings) == 1 else "their",
        )
    current = engine.app
    try:
        app = await asyncio.to_thread(load_app, current.root)
    except AppLoadError as exc:
        log.error("dfhost: %s; still running the previous code", exc)
        return
    app = dataclasses.replace(app, settings=current.settings, remote_workers=current.remote_workers)
    problems = _new_problems(current, app)
    if problems:
        for error in problems:
            detail = f"\n{error.detail}" if error.detail else ""
            log.error("dfhost: %s: %s%s", error.source, error.message, detail)
        log.error("dfhost: not reloaded, still running the previous code")
        return
    if workers is not None:
        failed = await workers.reload()
        if failed:
            for problem in failed:
                log.error("dfhost: a worker process could not load the app: %s", problem)
            log.error("dfhost: not reloaded, still running the previous code")
            return
    engine.use_app(app)
    for use_app in on_reload:
        try:
            await use_app(app)
        except Exception:  # the other parts still switch; this one keeps what it had
            log.exception("dfhost: a part of the host could not switch to the reloaded app")
    log.info("dfhost: reloaded: %d functions", len(app.functions))


def _new_problems(current: FunctionApp, app: FunctionApp) -> list[LoadError]:
    known = {(e.source, e.message) for e in current.errors}
    problems = [e for e in app.errors if (e.source, e.message) not in known]
    if not app.functions and not problems:
        problems = [LoadError(str(app.root), "no functions left to run")]
    return problems
