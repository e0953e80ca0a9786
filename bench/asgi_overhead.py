"""What the management API's start-and-wait adds to W1, without the network and the server.

    .venv/bin/python bench/asgi_overhead.py [--count 300] [--rounds 5]

One process, one engine on a fresh SQLite hub (bench/apps/bench_app), and chains of 3
activities started two ways, alternately, one at a time:

- `client`: `DurableClient.start_new` then `wait_for_completion`, as W1 in process;
- `asgi`: the web app dfhost serves (`dfhost.web.build_app`, with its access check) called
  directly as an ASGI app with `POST /runtime/webhooks/durabletask/orchestrators/chain3/ID
  ?timeout=10`, as uvicorn would call it after parsing a request.

Prints per round the median latency and CPU (this process, all threads) per chain of each,
and their difference: the cost of the API's routing, access check, request and response
handling. Alternating per chain makes drift on a busy machine hit both alike; the best round
is the least disturbed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dfhost.app.loader import load_app
from dfhost.client import DurableClient
from dfhost.runtime.engine import Engine
from dfhost.store import open_store
from dfhost.web import build_app
from dfhost.web.auth import Access

APP = Path(__file__).resolve().parent / "apps" / "bench_app"


async def via_client(client: DurableClient, i: int) -> None:
    iid = await client.start_new("chain3", f"c-{i}", json.dumps(i))
    done = await client.wait_for_completion(iid, 10, 1.0)
    assert done is not None and done.output == str(i + 3), done


async def via_asgi(web_app: Any, i: int) -> None:
    body = json.dumps(i).encode()
    path = f"/runtime/webhooks/durabletask/orchestrators/chain3/a-{i}"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"timeout=10",
        "headers": [
            (b"host", b"127.0.0.1:7071"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 7071),
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await web_app(scope, receive, send)
    status = sent[0]["status"]
    answer = b"".join(m.get("body", b"") for m in sent[1:])
    assert status == 200 and json.loads(answer) == i + 3, (status, answer)


async def run(count: int, rounds: int) -> None:
    app = load_app(APP)
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(f"sqlite:///{folder}/hub.sqlite3")
        await store.start()
        engine = Engine(app, store)
        await engine.start()
        client = DurableClient(store, app)
        web_app = build_app(
            client, app, rpc_base_url="http://127.0.0.1:7071/", access=Access(loopback_only=True)
        )
        try:
            for i in range(20):  # warm up both paths
                await via_client(client, -1 - i)
                await via_asgi(web_app, -1 - i)
            for number in range(rounds):
                timings: dict[str, list[tuple[float, float]]] = {"client": [], "asgi": []}
                for i in range(count):
                    n = number * count + i
                    ways = [("client", via_client(client, n)), ("asgi", via_asgi(web_app, n))]
                    if i % 2:
                        ways.reverse()
                    for name, call in ways:
                        wall, cpu = time.perf_counter(), time.process_time()
                        await call
                        timings[name].append(
                            (
                                (time.perf_counter() - wall) * 1000,
                                (time.process_time() - cpu) * 1000,
                            )
                        )
                medians = {
                    name: (
                        statistics.median(w for w, _ in values),
                        statistics.median(c for _, c in values),
                    )
                    for name, values in timings.items()
                }
                (cw, cc), (aw, ac) = medians["client"], medians["asgi"]
                print(
                    f"round {number + 1}: client {cw:.2f} ms (CPU {cc:.2f}), asgi {aw:.2f} ms "
                    f"(CPU {ac:.2f}): asgi adds {aw - cw:+.2f} ms (CPU {ac - cc:+.2f})",
                    flush=True,
                )
        finally:
            await engine.stop()
            await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(args.count, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
