"""The floor under every store call on SQLite: a round trip to the store's database thread with
trivial statements, as a read, a write that does not wait for the disk, and a durable write.

    .venv/bin/python bench/store_roundtrip.py [--count 500]

Prints the median microseconds of each (bench/RESULTS.md uses it to explain W1 and W4).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from dfhost.store.sqlite.thread import DatabaseThread


async def measure(path: Path, count: int) -> None:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)")
        return conn

    def read(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT 1").fetchone()

    def write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES (1)")

    db = DatabaseThread("bench-db", "FULL")
    await db.start(connect)
    for label, body, is_write, durable in (
        ("read", read, False, False),
        ("write, not durable", write, True, False),
        ("write, durable (fsync)", write, True, True),
    ):
        times = []
        for _ in range(count):
            began = time.perf_counter()
            await db.run(body, write=is_write, durable=durable)
            times.append(time.perf_counter() - began)
        print(f"{label:24s} p50 {statistics.median(times) * 1e6:6.0f} us")
    await db.stop(lambda conn: conn.close() if conn else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(measure(Path(folder) / "roundtrip.db", args.count))


if __name__ == "__main__":
    main()
