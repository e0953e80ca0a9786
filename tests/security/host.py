"""`dfhost start` with any arguments, as a subprocess, for the security tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path


class Host:
    def __init__(self, app_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = ["start", str(app_dir), "--port", "0", *args]
        self.env = {**os.environ, **(env or {})}
        self.lines: list[str] = []
        self.origin = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> Host:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dfhost", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        ready = threading.Event()

        def drain() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                found = re.search(r"listening on (http://\S+)", line)
                if found:
                    self.origin = found.group(1)
                    ready.set()
            ready.set()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        if not ready.wait(timeout) or not self.origin:
            self.stop()
            raise RuntimeError("dfhost did not start:\n" + self.output)
        return self

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._drain.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

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
