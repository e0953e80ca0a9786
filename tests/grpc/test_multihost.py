"""Two `dfhost serve` hosts on one PostgreSQL hub, a durabletask worker on each: they share
the work, and every orchestration completes once."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest
from durabletask import client

from tests.conftest import selected_backends
from tests.grpc.conftest import ServeProcess
from tests.grpc.test_sdk import patterns, sdk_worker

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_hosts_on_one_hub_share_workers_work(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if "postgres" not in selected_backends(request.config):
        pytest.skip("several hosts share a PostgreSQL hub: --backend did not select postgres")
    postgres_database: str = request.getfixturevalue("postgres_database")
    hub_url = f"{postgres_database}&hub=M{uuid.uuid4().hex[:16]}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = ServeProcess(hub_url, tmp_path / "a")
    second = ServeProcess(hub_url, tmp_path / "b")
    first.start()
    second.start()
    try:
        with sdk_worker(first.address) as w1, sdk_worker(second.address) as w2:
            w1.start()  # type: ignore[no-untyped-call]
            w2.start()  # type: ignore[no-untyped-call]
            c = client.TaskHubGrpcClient(host_address=first.address)
            other = client.TaskHubGrpcClient(host_address=second.address)
            ids = [c.schedule_new_orchestration(patterns, input=i) for i in range(12)]
            for instance_id in ids:
                c.wait_for_orchestration_start(instance_id, timeout=60)
                # An event sent through the other host reaches it as well.
                other.raise_orchestration_event(instance_id, "approve", data="yes")
            states = [c.wait_for_orchestration_completion(i, timeout=120) for i in ids]
        episodes = [_episodes(host) for host in (first, second)]
    finally:
        first.stop()
        second.stop()
    assert all(
        s is not None and s.runtime_status == client.OrchestrationStatus.COMPLETED for s in states
    )
    # Each host ran episodes of them, through its own worker.
    assert all(count > 0 for count in episodes), episodes


def _episodes(host: ServeProcess) -> float:
    text = httpx.get(f"{host.origin}/admin/metrics").text
    found = re.findall(
        r'^dfhost_episodes_total\{[^}]*orchestrator="patterns"[^}]*\} (\S+)$', text, re.M
    )
    return sum(float(v) for v in found)
