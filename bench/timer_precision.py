"""How late do durable timers fire on an idle host? Prints p50/p99/max lateness.

    .venv/bin/python bench/timer_precision.py [--timers 20] [--seconds 2]

Starts N orchestrations that each wait on one durable timer of `--seconds`, staggered so the
host is idle when each falls due, on a fresh SQLite task hub; lateness is the time between a
timer's FireAt and the start of the episode that consumed its TimerFired event (both recorded
in the history).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from datetime import timedelta
from pathlib import Path

from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.history import EventType
from dfhost.runtime.engine import Engine
from dfhost.store import open_store

APP = Path(__file__).resolve().parents[1] / "tests" / "apps" / "e2e_v2"


async def measure(timers: int, seconds: float) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        app = load_app(APP)
        store = open_store(f"sqlite:///{tmp}/hub.sqlite3")
        await store.start()
        engine = Engine(app, store)
        await engine.start()
        client = DurableClient(store, app)
        ids = []
        for _ in range(timers):
            ids.append(await client.start_new("sleeper", input_text=str(seconds)))
            await asyncio.sleep(0.137)  # stagger: each timer falls due on an idle host
        for iid in ids:
            await client.wait_for_completion(iid, timeout=seconds + 30)
        lateness = []
        for iid in ids:
            history = await client.get_history(iid)
            fired = next(e for e in history if e.type is EventType.TIMER_FIRED)
            started = [e for e in history if e.type is EventType.ORCHESTRATOR_STARTED]
            episode = next(e for e in started if e.timestamp >= fired.fire_at)
            lateness.append((episode.timestamp - fired.fire_at) / timedelta(milliseconds=1))
        await engine.stop()
        await store.close()
        return lateness


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    lateness = sorted(asyncio.run(measure(args.timers, args.seconds)))
    p99 = lateness[min(len(lateness) - 1, round(0.99 * (len(lateness) - 1)))]
    print(
        f"{len(lateness)} timers of {args.seconds}s: lateness p50 "
        f"{statistics.median(lateness):.1f} ms, p99 {p99:.1f} ms, max {lateness[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
