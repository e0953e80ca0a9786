"""`dfhost start` with any arguments, as a subprocess, for the security tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import HostProcess


class Host(HostProcess):
    """`dfhost start APP_DIR --port 0 ARGS...` (no `--store` unless ARGS has one)."""

    def __init__(self, app_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__(app_dir, None, env, extra=args)

    def start(self, timeout: float = 30.0) -> Host:
        super().start(timeout)
        return self

    def __enter__(self) -> Host:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run(app_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`dfhost start` expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "dfhost", "start", str(app_dir), "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
