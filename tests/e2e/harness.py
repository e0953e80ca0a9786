"""Run `dfhost start` as a subprocess and talk to it the way a user's code does."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, TypeVar

import azure.durable_functions as df

from dfhost import wire
from tests.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_APP = REPO / "examples" / "eternal_timer"
"""The article's scenario, as the README's quick start runs it."""
APPS = REPO / "tests" / "apps"
T = TypeVar("T")


class HostProcess:
    """One `dfhost start` process; its console output is collected line by line."""

    def __init__(
        self,
        app_dir: Path,
        store_url: str | None,
        env: dict[str, str] | None = None,
        extra: tuple[str, ...] = (),
    ):
        self.app_dir = app_dir
        self.cwd: Path | None = None
        """The process's working folder (None: this one's)."""
        self.store_url = store_url
        self.extra = list(extra)
        """More `dfhost start` arguments (`--ensure`, `--host`, ...)."""
        self.env = {**os.environ, **(env or {})}
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.origin = ""
        self.ready = threading.Event()

    def launch(self) -> HostProcess:
        """Start the process without waiting for it to serve (see `wait_ready`)."""
        command = [*self.command(), "--port", "0"]
        if self.store_url is not None:
            command += ["--store", self.store_url]
        self.proc = subprocess.Popen(
            [*command, *self.extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            cwd=self.cwd,
        )

        def drain() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                found = re.search(r"listening on (http://[^\s\"]+)", line)
                if found:
                    self.origin = found.group(1)
                    self.ready.set()
            self.ready.set()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        return self

    def command(self) -> list[str]:
        """The dfhost command, before its --port, --store and `extra` arguments."""
        return [sys.executable, "-m", "dfhost", "start", str(self.app_dir)]

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Whether it is serving (False: it exited, e.g. refused to start)."""
        self.ready.wait(timeout)
        return bool(self.origin)

    def start(self, timeout: float = 30.0) -> HostProcess:
        self.launch()
        if not self.wait_ready(timeout):
            self.stop()
            raise RuntimeError("dfhost did not start:\n" + self.output)
        return self

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def client(self, hub_name: str) -> df.DurableOrchestrationClient:
        binding = wire.client_binding(
            origin=self.origin,
            hub_name=hub_name,
            rpc_base_url=f"{self.origin}/runtime/webhooks/durabletask/",
        )
        return df.DurableOrchestrationClient(json.dumps(binding))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._drain.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


async def finished(client: Any, instance_id: str, timeout: float = 20.0) -> Any:
    """The status of `instance_id` once it is no longer Pending/Running."""
    return await eventually(
        lambda: client.get_status(instance_id),
        lambda s: (
            bool(s) and s.runtime_status.value not in ("Pending", "Running", "ContinuedAsNew")
        ),
        timeout=timeout,
    )
