"""examples/durabletask_app: its worker and client against `dfhost serve`, through a SIGKILL
of the host in the middle of an order and a restart."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.grpc.conftest import ServeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "durabletask_app"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _client(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE / "client.py"), *args, "--address", address],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_order_completes_after_the_host_is_killed_mid_run(hub_url: str, tmp_path: Path) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    host = ServeProcess(hub_url, tmp_path, grpc_port=port)
    host.start()
    worker = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "worker.py"), "--address", address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    restarted: ServeProcess | None = None
    try:
        started = _client(address, "start", "order-7")
        assert started.returncode == 0, started.stderr
        # Chaining, fan-out, the retried payment and the shipment's legs are behind it.
        reached = _client(address, "awaiting", "order-7")
        assert reached.returncode == 0, reached.stderr
        host.kill()
        restarted = ServeProcess(hub_url, tmp_path, grpc_port=port)
        restarted.start()
        approved = _client(address, "approve", "order-7")
        assert approved.returncode == 0, approved.stderr
        done = _client(address, "wait", "order-7")
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        worker.kill()
        worker.wait(10)
        if restarted is not None:
            restarted.stop()
        host.stop()
    result = json.loads(done.stdout.split("\n", 1)[1])
    assert result == {
        "total": 9,
        "receipt": "charged 9 for order-7 on attempt 3",
        "trip": [
            "order-7 reached warehouse",
            "order-7 reached hub",
            "order-7 reached doorstep",
        ],
        "approval": "approved",
    }
