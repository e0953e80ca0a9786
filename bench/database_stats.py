"""What a workload cost the PostgreSQL server, measured the same way on both benchmark sides
(it runs in dfhost's venv and in DBOS's, each with psycopg 3): the CPU of the server processes
serving the run's database, and the statements and transactions this process sent.

What decides how far a hub scales on separate machines is the database's work per
orchestration: the hosts add their own cores, the one database does not. On a 2-core machine
the wall clock cannot show it; these counts can, and load on the machine does not change them.

- CPU: user + system time of every `postgres: USER DATABASE ...` process (Linux /proc), read
  before the side closes its connections (a backend's CPU is gone with it). The server runs
  on this machine in the benchmark.
- Statements: every `execute`/`executemany` of a psycopg cursor in this process (patched in
  by `count_statements`), whoever sends it (dfhost's store; DBOS through SQLAlchemy).
- Transactions: explicit ones this process opened and committed: `Connection.commit()` (what
  SQLAlchemy calls) and psycopg's `transaction()` blocks. A statement on an autocommit
  connection is its own transaction and is not counted here; each explicit transaction adds
  about two round trips (BEGIN, COMMIT) to its statements.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["count_statements", "cpu_seconds", "database_cpu_seconds", "per_unit", "usage"]

_counts = {"statements": 0, "transactions": 0}


def count_statements() -> None:
    """Count this process's psycopg statements and transactions from now on."""
    import psycopg

    def counting(method: Any, key: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            _counts[key] += 1
            return method(*args, **kwargs)

        return call

    for cursor in (psycopg.Cursor, psycopg.AsyncCursor):
        cursor.execute = counting(cursor.execute, "statements")  # type: ignore[method-assign]
        cursor.executemany = counting(cursor.executemany, "statements")  # type: ignore[method-assign]
    psycopg.Connection.commit = counting(psycopg.Connection.commit, "transactions")  # type: ignore[method-assign]
    for transaction in (psycopg.Transaction, psycopg.AsyncTransaction):
        transaction.__init__ = counting(transaction.__init__, "transactions")  # type: ignore[method-assign]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process so far (Linux /proc; 0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_cpu_seconds(database: str) -> float:
    """CPU used so far by the server processes serving `database` (on this machine)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if title.startswith("postgres:") and f" {database} " in title:
            total += cpu_seconds(int(proc.name))
    return total


def usage(url: str) -> dict[str, float]:
    """The counters now, for a database URL (CPU 0 for a database not served here)."""
    if not url.startswith(("postgresql:", "postgres:")):
        return {}
    database = urlsplit(url).path.lstrip("/")
    return {
        "db_cpu_s": database_cpu_seconds(database),
        "statements": float(_counts["statements"]),
        "transactions": float(_counts["transactions"]),
    }


def per_unit(before: dict[str, float], after: dict[str, float], units: int) -> dict[str, float]:
    """The counters' growth between two `usage` readings, per unit of work (an orchestration
    or an activity), as metrics: db_cpu_ms_per, statements_per, transactions_per."""
    if not before or not after or units <= 0:
        return {}
    return {
        "db_cpu_ms_per": (after["db_cpu_s"] - before["db_cpu_s"]) * 1000 / units,
        "statements_per": (after["statements"] - before["statements"]) / units,
        "transactions_per": (after["transactions"] - before["transactions"]) / units,
        "db_cpu_s": after["db_cpu_s"] - before["db_cpu_s"],
    }
