"""`dfhost serve` in a subprocess, driven by the durabletask SDK's own client and worker, on
SQLite and on PostgreSQL (`--backend` selects, as for the store tests)."""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc

from tests.conftest import selected_backends
from tests.e2e.harness import HostProcess

GRPC_BACKENDS = ("sqlite", "postgres")


class ServeProcess(HostProcess):
    """One `dfhost serve --grpc-port 0` process; `address` is its gRPC host:port."""

    def __init__(
        self, store_url: str, folder: Path, extra: tuple[str, ...] = (), grpc_port: int = 0
    ) -> None:
        super().__init__(folder, store_url, extra=("--grpc-port", str(grpc_port), *extra))
        self.cwd = folder  # where a hub without a folder of its own keeps its keys

    def command(self) -> list[str]:
        return [sys.executable, "-m", "dfhost", "serve"]

    @property
    def address(self) -> str:
        return grpc_address(self)


def grpc_address(host: HostProcess) -> str:
    """The gRPC host:port a started `dfhost serve` or `start --grpc-port` listens on."""
    for line in host.lines:
        found = re.search(r"Durable Task gRPC on grpcs?://(\S+)", line)
        if found:
            return found.group(1)
    raise AssertionError("no gRPC address in the output:\n" + host.output)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "grpc_backend" in metafunc.fixturenames:
        chosen = [b for b in selected_backends(metafunc.config) if b in GRPC_BACKENDS]
        metafunc.parametrize("grpc_backend", chosen)


@pytest.fixture
def hub_url(grpc_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh task hub of the backend."""
    if grpc_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'hub' / 'hub.sqlite3'}"
    database: str = request.getfixturevalue("postgres_database")
    return f"{database}&hub=G{uuid.uuid4().hex[:16]}"


@pytest.fixture
def served(hub_url: str, tmp_path: Path) -> Iterator[ServeProcess]:
    host = ServeProcess(hub_url, tmp_path)
    host.start()
    yield host
    host.stop()


@pytest.fixture
def stub(served: ServeProcess) -> Iterator[pb_grpc.TaskHubSidecarServiceStub]:
    """The raw protocol, for what the SDK's worker does not let a test do (disconnect, give
    back, answer late)."""
    with grpc.insecure_channel(served.address) as channel:
        yield pb_grpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]


def next_work_item(stream: Iterator[pb.WorkItem]) -> pb.WorkItem:
    """The next work item of a GetWorkItems stream, past its health pings."""
    for item in stream:
        if not item.HasField("healthPing"):
            return item
    raise AssertionError("the work item stream ended")
