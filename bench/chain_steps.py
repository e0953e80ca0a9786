"""Where one 3-activity chain's time goes on dfhost (W1's workload), step by step: the engine's
and store's calls are timed in-process while chains run one after another.

    .venv/bin/python bench/chain_steps.py [--store URL] [--chains 300] [--poll 0.02]

Prints the median and mean milliseconds of each step (the first 10% of calls are left out as
warm-up). `--poll` is how often the caller looks for completion; a long one keeps its reads
from competing with the engine's work on the store's thread.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dfhost_side import open_hub

from dfhost.history import OrchestrationStatus

STEPS = {
    "store": [
        "create_instance",
        "claim_episodes",
        "commit_episode",
        "commit_episode_holding",
        "complete_activity",
    ],
    "engine": ["_replay", "_run_activity", "_run_episode"],
}


def timed(times: list[float], call: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return await call(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - began)

    return wrapper


async def measure(url: str, chains: int, poll: float) -> None:
    hub = await open_hub(url)
    times: dict[str, list[float]] = collections.defaultdict(list)
    for owner_name, names in STEPS.items():
        owner = hub.store if owner_name == "store" else hub.engine
        for name in names:
            if hasattr(owner, name):  # commit_episode_holding: SQLite only
                setattr(owner, name, timed(times[name], getattr(owner, name)))
    try:
        for i in range(chains):
            began = time.perf_counter()
            iid = await hub.client.start_new("chain3", input_text=json.dumps(i))
            while True:
                status = await hub.store.get_instance(iid)
                if status is not None and status.status is OrchestrationStatus.COMPLETED:
                    break
                await asyncio.sleep(poll)
            times["whole chain (incl. polling)"].append(time.perf_counter() - began)
    finally:
        await hub.engine.stop()
        await hub.store.close()
    for name, values in times.items():
        values = values[len(values) // 10 :]
        if not values:  # a step this code path no longer takes
            continue
        print(
            f"{name:30s} n={len(values):5d} p50={statistics.median(values) * 1000:7.3f} ms "
            f"mean={statistics.mean(values) * 1000:7.3f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", help="task hub URL (default: a fresh SQLite file)")
    parser.add_argument("--chains", type=int, default=300)
    parser.add_argument("--poll", type=float, default=0.02)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.store or f"sqlite:///{Path(folder) / 'steps.db'}"
        asyncio.run(measure(url, args.chains, args.poll))


if __name__ == "__main__":
    main()
