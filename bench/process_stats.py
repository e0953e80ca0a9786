"""Measurements both benchmark sides take the same way (stdlib only: it runs in dfhost's venv
and in the peers' venvs)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; 0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def sqlite_files_bytes(path: Path) -> int:
    """A SQLite database's bytes on disk, with its WAL and shared-memory files."""
    total = 0
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(f"{path}{suffix}").st_size
    return total


def emit(metrics: dict[str, Any], **extra: Any) -> None:
    """Hand the result to the harness: one JSON line, the last line on stdout."""
    sys.stdout.write("\n" + json.dumps({"metrics": metrics, **extra}) + "\n")
    sys.stdout.flush()
