"""What the `dfhost` commands share about task hubs: every command picks its hub as
`dfhost start APP_DIR [--store URL]` does (the app's hub name and host.json task hub settings
apply to `--store` too), and a command that only looks at a hub never creates an empty one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dfhost.config import AppLoadError, load_settings
from dfhost.store import app_store_url, default_store_url

if TYPE_CHECKING:
    from dfhost.config import AppSettings

__all__ = [
    "STORE_HELP",
    "CommandError",
    "command_store_url",
    "require_existing_hub",
    "sqlite_file",
]

STORE_HELP = "task hub URL (default: the one `dfhost start APP_DIR` uses)"
"""`--store` of the commands that open an app's task hub."""


class CommandError(Exception):
    """A one-line error for the user; the command exits non-zero."""


def command_store_url(app_dir: Path, store: str | None, settings: AppSettings | None = None) -> str:
    """The task hub of the app in `app_dir` (its `settings`, read from the folder when not
    given) with `store` (`--store`) if given. Without an app folder, `store` as it is; with
    neither, CommandError."""
    if settings is None:
        try:
            settings, _ = load_settings(app_dir)
        except AppLoadError:
            if store is None:
                raise CommandError(
                    f"no function app in {app_dir}: give the app folder or --store"
                ) from None
            return store
    return app_store_url(store, default_store_url(app_dir), settings.hub_name, settings.storage)


def require_existing_hub(url: str, *, explicit: bool) -> None:
    """Refuse to create an empty SQLite hub just by looking (a typo in the app folder or
    `--store`); `explicit`: the URL came from `--store`."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        hint = "check --store" if explicit else "run `dfhost start` there first, or pass --store"
        raise CommandError(f"no task hub at {path} ({hint})")


def sqlite_file(url: str) -> Path | None:
    """The file of a `sqlite:///PATH` hub; None for other hubs and in-memory ones."""
    base = url.partition("?")[0]
    if not base.startswith("sqlite:///") or base.endswith(":memory:"):
        return None
    return Path(base[len("sqlite:///") :])


def add_key_options(parser: argparse.ArgumentParser) -> None:
    """--require-keys / --allow-anonymous, for every command that serves."""
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument(
        "--require-keys",
        action="store_true",
        help="enforce keys on a loopback address too (they are on any other address)",
    )
    keys.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve a non-loopback address without keys (anyone reaching it may do anything)",
    )
