"""The Azure Storage task hub's own guarantees, beyond the storage contract: hosts share the
partitions, a host that lost a partition commits nothing, a redelivered message is processed
once, big payloads go through blobs, and hubs do not see each other."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from azure.storage.blob.aio import BlobLeaseClient

from dfhost.history import EventType, HistoryEvent, OrchestrationStatus, utcnow
from dfhost.store import LeaseLostError, Store, open_store
from dfhost.store.azure.codec import partition_of
from dfhost.work import EpisodeOutcome, Message
from tests.azurite import store_url
from tests.contract.test_store import T0, claim, claim_one, event, outcome, raised, start
from tests.waiting import eventually

Status = OrchestrationStatus


@pytest.fixture
def fast_renewals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Renew and rebalance partition leases every 0.2 s instead of 5 s."""
    from dfhost.store.azure import partitions as azure_partitions

    monkeypatch.setattr(azure_partitions, "RENEW_SECONDS", 0.2)


@asynccontextmanager
async def opened(hub: str, options: str = "") -> AsyncIterator[Any]:
    store: Any = open_store(store_url(hub) + options)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def owned(store: Any) -> Callable[[], int]:
    return lambda: len(store.partitions.claimable())


async def test_hosts_share_the_partitions_and_take_over_when_one_leaves(
    connection: str, hub: str, fast_renewals: None
) -> None:
    async with opened(hub) as first:
        await first.open_host("first", utcnow())
        assert len(first.partitions.claimable()) == 4
        async with opened(hub) as second:
            await second.open_host("second", utcnow())
            await eventually(owned(second), lambda n: n == 2, timeout=10)
            await eventually(owned(first), lambda n: n == 2, timeout=10)
        # The second closed: it handed its partitions back, and the first takes them.
        await eventually(owned(first), lambda n: n == 4, timeout=10)


async def test_a_host_that_lost_its_partition_commits_nothing(
    connection: str, hub: str, fast_renewals: None
) -> None:
    async with opened(hub) as store:
        await store.create_instance(start("a"))
        work = await claim_one(store, "a")
        partition = partition_of("a", 4)
        tenure = store.partitions.tenure(partition)
        # Another host breaks the lease (as an operator, or a host that thinks this one dead).
        blob = store.account.leases.get_blob_client(f"control-{partition:02d}")
        await BlobLeaseClient(blob).break_lease(lease_break_period=0)

        # It notices at its next renewal (and may well take the free partition again).
        await eventually(
            lambda: store.partitions.tenure(partition), lambda t: t != tenure, timeout=10
        )
        with pytest.raises(LeaseLostError):
            await store.commit_episode("host-a", work, outcome(work, Status.COMPLETED))
        instance = await store.get_instance("a")
        assert instance is not None and instance.status is Status.PENDING
        assert await store.get_history("a") == []


async def test_a_message_redelivered_after_a_crash_is_processed_once(
    connection: str, hub: str
) -> None:
    async with opened(hub, "&control_timeout=5") as store:
        await store.create_instance(start("a"))
        await claim_and_commit(store, "a")
        await store.send_message(Message(instance_id="a", event=raised("once")))
        work = await claim_one(store, "a")
        assert [m.event for m in work.messages] == [raised("once")]

        # Crash between the commit point and the deletion of the consumed message: it stays
        # in the queue, and this host forgets it held it (as a new process would).
        async def crash(items: Any) -> None:
            store.inbox.forget(list(items))

        store.inbox.delete = crash
        await store.commit_episode("host-a", work, outcome(work, events=[raised("once")]))
        del store.inbox.delete
        assert list(store.inbox) == []

        # It reappears after its 5 s visibility timeout; the row lists it as consumed.
        await eventually(lambda: redelivered(store), timeout=20)
        assert await claim(store, now=T0) == []
        assert [e for e in await store.get_history("a") if e.type is EventType.EVENT_RAISED] == [
            raised("once")
        ]
        await store.send_message(Message(instance_id="a", event=raised("next")))
        assert [m.event for m in (await claim_one(store, "a")).messages] == [raised("next")]


async def redelivered(store: Any) -> bool:
    await store.inbox.ingest(store.partitions.claimable())
    return any(h.envelope.instance_id == "a" for h in store.inbox)


async def claim_and_commit(store: Store, instance_id: str, **fields: Any) -> EpisodeOutcome:
    work = await claim_one(store, instance_id)
    result = outcome(work, **fields)
    await store.commit_episode("host-a", work, result)
    return result


async def test_a_result_delivered_twice_is_recorded_once(connection: str, hub: str) -> None:
    async with opened(hub) as store:
        await store.create_instance(start("a"))
        scheduled = event(EventType.TASK_SCHEDULED, event_id=0, name="Act")
        await claim_and_commit(store, "a", events=[scheduled])
        done = event(EventType.TASK_COMPLETED, task_scheduled_id=0, result='"r"')
        for _ in range(2):  # two hosts ran it, or its result was sent again after a crash
            await store.send_message(Message(instance_id="a", execution_id="a:1", event=done))
        work = await claim_one(store, "a")
        assert [m.event for m in work.messages] == [done]
        await store.commit_episode("host-a", work, outcome(work, events=[done]))
        await store.send_message(Message(instance_id="a", execution_id="a:1", event=done))
        assert await claim(store) == []


async def test_big_payloads_go_through_blobs(connection: str, hub: str) -> None:
    big = '"' + "x" * 200_000 + '"'
    async with opened(hub) as store:
        await store.create_instance(start("a", input=big))
        instance = await store.get_instance("a")
        assert instance is not None and instance.input == big
        work = await claim_one(store, "a")
        started = work.messages[0].event
        assert started.input == big
        huge = [replace(raised(f"e{i}"), input=big) for i in range(3)]
        await store.commit_episode("host-a", work, outcome(work, events=[started, *huge]))
        await store.send_message(
            Message(
                instance_id="a",
                event=HistoryEvent(
                    type=EventType.EVENT_RAISED, timestamp=T0, name="big", input=big
                ),
            )
        )
        work = await claim_one(store, "a")
        assert work.history == [started, *huge]
        assert work.messages[0].event.input == big
        final = replace(work.instance, status=Status.COMPLETED, output=big, custom_status=big)
        await store.commit_episode("host-a", work, EpisodeOutcome(instance=final, new_events=[]))
        assert await store.get_instance("a") == final
        assert await store.purge_instance("a") == 1
        assert [b async for b in store.account.payloads.list_blobs()] == []


async def test_hubs_sharing_an_account_do_not_see_each_other(connection: str, hub: str) -> None:
    async with opened(hub) as one, opened(hub + "Other") as other:
        await one.create_instance(start("a"))
        assert await other.get_instance("a") is None
        assert await claim(other) == []
        assert [w.instance.instance_id for w in await claim(one)] == ["a"]
