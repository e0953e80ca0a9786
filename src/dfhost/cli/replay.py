"""`dfhost replay` (replay stored instances against new code) and `dfhost history export`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from dfhost.cli.common import STORE_HELP, CommandError, command_store_url, require_existing_hub
from dfhost.store import StoreError
from dfhost.testing.golden import ReplayReport, export_history, replay_instances

# --- the commands -------------------------------------------------------------------------------


def add_replay_commands(commands: Any) -> None:
    """Add `dfhost replay` and `dfhost history export` to the CLI's subparsers."""
    replay = commands.add_parser(
        "replay",
        help="replay stored histories against the current code; exit 1 if any would break",
    )
    replay.add_argument("app_dir", help="the function app folder (the code to check)")
    replay.add_argument("--store", metavar="URL", help=STORE_HELP)
    which = replay.add_mutually_exclusive_group()
    which.add_argument("--instance", metavar="ID", help="only this instance")
    which.add_argument("--name", help="only instances of this orchestrator")
    replay.add_argument(
        "--all", action="store_true", help="finished instances too (default: unfinished only)"
    )
    history = commands.add_parser("history", help="export an instance's history")
    actions = history.add_subparsers(dest="history_command", required=True)
    export = actions.add_parser(
        "export", help="write an instance's current history as JSON (for replay_history)"
    )
    export.add_argument("instance_id", metavar="ID")
    export.add_argument("app_dir", nargs="?", default=".", help="the app folder (default .)")
    export.add_argument("--store", metavar="URL", help=STORE_HELP)


def run_replay_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `dfhost replay` or `dfhost history export`; errors are one line on stderr."""
    from dfhost.config import AppLoadError

    out = out or sys.stdout
    try:
        # The hub `dfhost start APP_DIR [--store URL]` would use, for both commands.
        store_url = command_store_url(Path(args.app_dir), args.store)
        require_existing_hub(store_url, explicit=args.store is not None)
        if args.command == "history":
            document = asyncio.run(export_history(store_url, args.instance_id))
            json.dump(document, out, indent=1, ensure_ascii=False)
            out.write("\n")
            return 0
        reports = asyncio.run(
            replay_instances(
                args.app_dir,
                store_url,
                instance_id=args.instance,
                name=args.name,
                everything=args.all,
            )
        )
    except (AppLoadError, CommandError, StoreError, LookupError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, LookupError) and exc.args else exc
        print(f"dfhost: {message}", file=sys.stderr)
        return 2
    return _print_reports(reports, out)


def _print_reports(reports: list[ReplayReport], out: TextIO) -> int:
    broken = [r for r in reports if not r.ok]
    for report in reports:
        verdict = "ok    " if report.ok else "BREAKS"
        line = f"{verdict} {report.instance_id} ({report.name}, {report.status})"
        if report.error:
            line += f": {report.error}"
        print(line, file=out)
        for pitfall in report.pitfalls:
            print(f"       warning: {pitfall.message}", file=out)
    print(
        f"{len(reports)} instance(s) replayed, {len(broken)} would break"
        + (" with this code." if broken else "."),
        file=out,
    )
    return 1 if broken else 0
