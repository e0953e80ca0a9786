"""`dfhost instances ...`: manage orchestration instances straight in the task hub.

The commands open the store themselves, so they work whether or not a host is running; a
running host on the same hub is woken by the store and applies terminate, raise, suspend, ...
at once, without replaying the orchestrator where none is needed (terminate, purge). `--json`
prints the management API's bodies (`dfhost.wire`); errors are one line and exit non-zero.

Also here, for `dfhost start`: the operations settings (`--ensure`, host.json
`extensions.durableTask.dfhost`) and ensuring instances at startup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dfhost.cli.common import STORE_HELP, CommandError, command_store_url, require_existing_hub
from dfhost.client import (
    DurableClient,
    InstanceExistsError,
    InstanceNotFoundError,
    UnknownOrchestratorError,
)
from dfhost.config import EnsureSpec, OpsSettings, SettingsError, parse_ensure_flag
from dfhost.history import Instance, parse_statuses, parse_time
from dfhost.ids import InvalidArgumentError, InvalidInstanceIdError, validate_instance_id
from dfhost.store import (
    DeliveryResult,
    InstanceQuery,
    Store,
    StoreError,
    open_store,
)
from dfhost.wire import api_history, api_status

if TYPE_CHECKING:
    from dfhost.app.functions import FunctionApp

__all__ = [
    "add_instances_command",
    "ensure_instances",
    "operations_settings",
    "run_instances_command",
]

log = logging.getLogger("dfhost")

_PAGE = 1000


# --- dfhost start: ensure and retention settings ---------------------------------------------


def operations_settings(app: FunctionApp, ensure_flags: Sequence[str]) -> OpsSettings:
    """host.json's operations settings with `--ensure` flags added (a flag wins over host.json
    for the same instance id). Raises `SettingsError` naming the bad flag or instance (a bad
    host.json setting is already one of the app's fatal load errors)."""
    settings = app.settings.operations
    specs = {spec.instance_id: spec for spec in settings.ensure}
    flagged: set[str] = set()
    for text in ensure_flags:
        spec = parse_ensure_flag(text)
        if spec.instance_id in flagged:
            raise SettingsError(f"--ensure {spec.instance_id!r} is given twice")
        flagged.add(spec.instance_id)
        specs[spec.instance_id] = spec
    known = sorted(f.name for f in app.of_kind("orchestrator"))
    for spec in specs.values():
        try:
            validate_instance_id(spec.instance_id)
        except InvalidInstanceIdError as exc:
            raise SettingsError(f"ensure {spec.instance_id!r}: {exc}") from None
        if app.orchestrator(spec.orchestrator) is None:
            raise SettingsError(
                f"ensure {spec.instance_id!r}: '{spec.orchestrator}' is not an orchestrator of "
                f"this app (known: {', '.join(known) or 'none'})"
            )
    return replace(settings, ensure=list(specs.values()))


async def ensure_instances(client: DurableClient, specs: Sequence[EnsureSpec]) -> None:
    """Start each instance unless an unfinished one holds its id; one log line each."""
    for spec in specs:
        if await client.ensure_running(spec.instance_id, spec.orchestrator, spec.input):
            log.info("dfhost: ensure: started '%s' (%s)", spec.instance_id, spec.orchestrator)
            continue
        existing = await client.get_status(spec.instance_id)
        if existing is None:
            continue  # purged this very moment; the next start sees to it
        if existing.name != spec.orchestrator:
            log.warning(
                "dfhost: ensure: '%s' is held by an unfinished instance of '%s', not '%s'",
                spec.instance_id,
                existing.name,
                spec.orchestrator,
            )
        else:
            log.info(
                "dfhost: ensure: '%s' (%s) is already %s",
                spec.instance_id,
                spec.orchestrator,
                existing.status.value,
            )


# --- dfhost instances ------------------------------------------------------------------------


def add_instances_command(commands: Any) -> None:
    """Add `instances` and its subcommands to the `dfhost` argument parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--app", default=".", metavar="APP_DIR", help="the function app folder (default: .)"
    )
    common.add_argument("--store", metavar="URL", help=STORE_HELP)
    common.add_argument("--json", action="store_true", help="print the HTTP API's JSON")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument(
        "--status",
        action="append",
        default=[],
        help="runtime status, e.g. Running or Completed,Failed (repeatable)",
    )
    filters.add_argument("--name", help="orchestrator name")
    filters.add_argument("--prefix", help="instance id prefix")
    filters.add_argument("--created-from", metavar="TIME", help="created at or after (ISO 8601)")
    filters.add_argument("--created-to", metavar="TIME", help="created at or before (ISO 8601)")

    instances = commands.add_parser("instances", help="list and manage orchestration instances")
    sub = instances.add_subparsers(dest="action", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", parents=[common, filters], help="list instances")
    listing.add_argument("--top", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--all", action="store_true", help="every matching instance")
    show = sub.add_parser("show", parents=[common], help="show one instance")
    show.add_argument("instance_id", metavar="ID")
    show.add_argument("--history", action="store_true", help="with its history")
    start = sub.add_parser("start", parents=[common], help="start an orchestration")
    start.add_argument("orchestrator", metavar="NAME")
    start.add_argument("--id", dest="instance_id", help="instance id (default: a new one)")
    start.add_argument("--input", help="input as JSON text")
    raise_ = sub.add_parser("raise", parents=[common], help="raise an event")
    raise_.add_argument("instance_id", metavar="ID")
    raise_.add_argument("event", metavar="EVENT")
    raise_.add_argument("data", metavar="JSON", nargs="?", help="event data as JSON text")
    for action, text in (
        ("terminate", "terminate an instance (no replay needed)"),
        ("suspend", "suspend an instance"),
        ("resume", "resume a suspended instance"),
        ("rewind", "re-run the failed work of a Failed instance"),
    ):
        parser = sub.add_parser(action, parents=[common], help=text)
        parser.add_argument("instance_id", metavar="ID")
        parser.add_argument("--reason", help="recorded in the history")
    restart = sub.add_parser("restart", parents=[common], help="start an instance over")
    restart.add_argument("instance_id", metavar="ID")
    restart.add_argument("--new-id", action="store_true", help="under a new instance id")
    purge = sub.add_parser(
        "purge", parents=[common, filters], help="delete instances and their history"
    )
    purge.add_argument("instance_id", metavar="ID", nargs="?", help="one instance")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def run_instances_command(args: argparse.Namespace) -> int:
    """Run a parsed `dfhost instances ...` command; returns the exit status."""
    try:
        return asyncio.run(_run(args))
    except CommandError as exc:
        print(f"dfhost: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _run(args: argparse.Namespace) -> int:
    app_dir = Path(args.app)
    url = command_store_url(app_dir, args.store)
    try:
        store = open_store(url)
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    require_existing_hub(url, explicit=args.store is not None)
    try:
        await store.start()
        client = DurableClient(store)
        if args.action in ("start", "restart"):
            client = _client_with_app(store, app_dir)
        return await _COMMANDS[args.action](client, args, sys.stdout)
    except (StoreError, InvalidArgumentError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        await store.close()


def _client_with_app(store: Store, app_dir: Path) -> DurableClient:
    """A client that checks orchestrator names against the app, when the folder has one."""
    # Imported here: loading apps pulls in azure.functions, which no other command needs.
    from dfhost.app.loader import load_app
    from dfhost.config import AppLoadError

    try:
        app = load_app(app_dir)
    except AppLoadError:
        return DurableClient(store)
    if not app.of_kind("orchestrator"):
        return DurableClient(store)
    return DurableClient(store, app, default_version=app.settings.default_version)


Command = Callable[[DurableClient, argparse.Namespace, TextIO], Awaitable[int]]


async def _list(client: DurableClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.top <= 0:
        raise CommandError(f"--top {args.top} is not a positive number")
    query = replace(_query(args), top=_PAGE if args.all else min(args.top, _PAGE))
    found: list[Instance] = []
    while True:
        page = await client.query(query)
        found.extend(page.instances)
        more = page.continuation is not None
        if not more or (not args.all and len(found) >= args.top):
            break
        query = replace(query, continuation=page.continuation)
    if not args.all and len(found) > args.top:
        found, more = found[: args.top], True
    if args.json:
        _print_json([api_status(i) for i in found], out)
        return 0
    _print_table(found, out)
    if more and not args.all:
        print(f"(showing the newest {len(found)}; use --top N or --all for more)", file=sys.stderr)
    return 0


async def _show(client: DurableClient, args: argparse.Namespace, out: TextIO) -> int:
    instance = await _existing(client, args.instance_id)
    history = None
    if args.history:
        events = await client.get_history(instance.instance_id)
        history = api_history(events, show_input=True, show_output=True)
    body = api_status(instance, history=history)
    if args.json:
        _print_json(body, out)
        return 0
    rows = [
        ("Instance", instance.instance_id),
        ("Name", instance.name),
        ("Status", instance.status.value),
        ("Created", body["createdTime"]),
        ("Last updated", body["lastUpdatedTime"]),
        ("Input", _compact(body["input"])),
        ("Output", _compact(body["output"])),
        ("Custom status", _compact(body["customStatus"])),
    ]
    if instance.version:
        rows.insert(2, ("Version", instance.version))
    if instance.parent_instance_id:
        rows.insert(2, ("Parent", instance.parent_instance_id))
    for label, value in rows:
        print(f"{label + ':':<15}{value}", file=out)
    if instance.failure_details:
        print(f"{'Failure:':<15}{instance.failure_details.splitlines()[-1]}", file=out)
    if history is not None:
        print("\nHistory:", file=out)
        for item in history:
            print(f"  {item['Timestamp']}  {item['EventType']:<34}{_event_summary(item)}", file=out)
    return 0


async def _start(client: DurableClient, args: argparse.Namespace, out: TextIO) -> int:
    input_text = _json_arg("--input", args.input)
    try:
        instance_id = await client.start_new(args.orchestrator, args.instance_id, input_text)
    except (UnknownOrchestratorError, InvalidInstanceIdError, InstanceExistsError) as exc:
        raise CommandError(str(exc)) from None
    return await _report(client, instance_id, f"Started '{args.orchestrator}' as", args, out)


async def _raise(client: DurableClient, args: argparse.Namespace, out: TextIO) -> int:
    data = _json_arg("JSON", args.data)
    result = await client.raise_event(args.instance_id, args.event, data)
    _check_delivery(result, args.instance_id, f"receive event '{args.event}'")
    return await _report(client, args.instance_id, f"Raised '{args.event}' for", args, out)


async def _control(client: DurableClient, args: argparse.Namespace, out: TextIO) -> int:
    operations = {
        "terminate": client.terminate,
        "suspend": client.suspend,
        "resume": client.resume,
        "rewind": client.rewind,
    }
    result = await operations[args.action](args.instance_id, args.reason)
    verb = "be rewound (only Failed ones can)" if args.action == "rewind" else args.action
    _check_delivery(result, args.instance_id, verb)
    return await _report(client, args.instance_id, f"Requested {args.action} of", args, out)


async def _restart(client: DurableClient, args: argparse.Namespace, out: TextIO) -> int:
    try:
        instance_id = await client.restart(args.instance_id, args.new_id)
    except InstanceExistsError as exc:
        raise CommandError(f"{exc} Terminate it first, or use --new-id.") from None
    except InstanceNotFoundError:
        raise CommandError(f"no instance with ID '{args.instance_id}'") from None
    except UnknownOrchestratorError as exc:
        raise CommandError(str(exc)) from None
    return await _report(client, instance_id, f"Restarted '{args.instance_id}' as", args, out)


async def _purge(client: DurableClient, args: argparse.Namespace, out: TextIO) -> int:
    query = _query(args)
    filtered = bool(
        query.statuses
        or query.name
        or query.instance_id_prefix
        or query.created_from
        or query.created_to
    )
    if args.instance_id is not None:
        if filtered:
            raise CommandError("purge takes an instance ID or filters, not both")
        instance = await _existing(client, args.instance_id)
        question = (
            f"Purge instance '{instance.instance_id}' ({instance.name}, "
            f"{instance.status.value}) and its history?"
        )
        if not args.yes:
            _confirm(question)
        deleted = await client.purge(instance.instance_id)
    else:
        if not filtered:
            raise CommandError(
                "purge needs an instance ID or a filter (--status, --name, --prefix, "
                "--created-from, --created-to)"
            )
        count = await client.count(query)
        if count == 0:
            deleted = 0
        else:
            if not args.yes:
                _confirm(f"Purge {count} instance(s) and their history?")
            deleted = await client.purge_many(query)
    if args.json:
        _print_json({"instancesDeleted": deleted}, out)
    else:
        print(f"Purged {deleted} instance(s).", file=out)
    return 0


_COMMANDS: dict[str, Command] = {
    "list": _list,
    "show": _show,
    "start": _start,
    "raise": _raise,
    "terminate": _control,
    "suspend": _control,
    "resume": _control,
    "rewind": _control,
    "restart": _restart,
    "purge": _purge,
}


# --- helpers ---------------------------------------------------------------------------------


def _query(args: argparse.Namespace) -> InstanceQuery:
    try:
        statuses = parse_statuses(args.status, "--status")
    except ValueError as exc:
        raise CommandError(str(exc)) from None

    def time(option: str, value: str | None) -> Any:
        if value is None:
            return None
        try:
            return parse_time(value.replace("Z", "+00:00"))
        except ValueError:
            raise CommandError(f"{option} {value!r} is not an ISO 8601 date or time") from None

    return InstanceQuery(
        created_from=time("--created-from", args.created_from),
        created_to=time("--created-to", args.created_to),
        statuses=statuses,
        instance_id_prefix=args.prefix or None,
        name=args.name or None,
    )


async def _existing(client: DurableClient, instance_id: str) -> Instance:
    instance = await client.get_status(instance_id)
    if instance is None:
        raise CommandError(f"no instance with ID '{instance_id}'")
    return instance


def _check_delivery(result: DeliveryResult, instance_id: str, verb: str) -> None:
    if result == "not_found":
        raise CommandError(f"no instance with ID '{instance_id}'")
    if result == "gone":
        raise CommandError(f"instance '{instance_id}' has finished, so it cannot {verb}")


async def _report(
    client: DurableClient, instance_id: str, done: str, args: argparse.Namespace, out: TextIO
) -> int:
    if args.json:
        instance = await client.get_status(instance_id)
        _print_json(api_status(instance) if instance is not None else None, out)
    else:
        print(f"{done} '{instance_id}'.", file=out)
    return 0


def _json_arg(option: str, text: str | None) -> str | None:
    if text is None:
        return None
    try:
        json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{option} is not valid JSON: {exc}") from None
    return text


def _confirm(question: str) -> None:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if not sys.stdin.isatty():  # nobody typed the newline that ends the question's line
        print(file=sys.stderr)
    if answer not in ("y", "yes"):
        raise CommandError("purge cancelled (nothing deleted); pass --yes to skip the question")


def _print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out)


def _print_table(instances: list[Instance], out: TextIO) -> None:
    if not instances:
        print("No instances.", file=out)
        return
    header = ("INSTANCE ID", "NAME", "STATUS", "CREATED", "LAST UPDATED")
    rows = [header]
    for instance in instances:
        body = api_status(instance, show_input=False)
        rows.append(
            (
                instance.instance_id,
                instance.name,
                instance.status.value,
                body["createdTime"],
                body["lastUpdatedTime"],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]), file=out)


def _compact(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."


def _event_summary(item: dict[str, Any]) -> str:
    parts = []
    for key in ("FunctionName", "Name", "OrchestrationStatus", "FireAt", "Reason"):
        if item.get(key) is not None:
            parts.append(f"{key}={item[key]}")
    if "Result" in item:
        parts.append(f"Result={_compact(item['Result'])}")
    return " ".join(parts)
