"""Partition ownership and host liveness of an Azure Storage task hub, by blob leases.

Blob `control-NN` of the leases container stands for control queue NN: whoever holds its
lease (15 s, renewed every 5 s) is the only host that reads that queue and runs the episodes
of its instances. Each host (store) also leases `hosts/<id>`, whose metadata lists its owners,
while it runs, so the others can count it and tell its owners from dead ones. A host takes free
partitions up to its fair share (partitions
divided by live hosts, rounded up) and hands back any above it, after letting the episodes in
flight on them finish, so hosts joining or leaving rebalance within a few renewals. A host
whose renewal fails, or that could not renew in time, has lost the partition and stops
committing for it at once; the row ETags fence the short race in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob.aio import BlobLeaseClient

from dfhost.store.azure.account import AzureAccount, one_line

__all__ = ["LEASE_SECONDS", "RENEW_SECONDS", "Partitions"]

log = logging.getLogger(__name__)

LEASE_SECONDS = 15
"""The shortest blob lease the service grants: a dead host's partitions are free after it."""
RENEW_SECONDS = 5.0
_MARGIN = 2.0
"""Seconds before a lease's expiry (by our clock) at which we stop relying on it."""
_HOSTS = "hosts/"


_tenures = itertools.count(1)


@dataclass(eq=False, slots=True)
class _Lease:
    client: BlobLeaseClient
    renewed: float
    """time.monotonic() of the acquisition or last renewal."""
    tenure: int = field(default_factory=lambda: next(_tenures))
    """Unique per acquisition: work claimed under one tenure never commits under another."""

    def fresh(self) -> bool:
        return time.monotonic() < self.renewed + LEASE_SECONDS - _MARGIN


class Partitions:
    """This host's partitions and host registrations. Use it from one event loop."""

    def __init__(
        self,
        account: AzureAccount,
        on_lost: Callable[[int], None],
        drain: Callable[[int], Awaitable[None]],
        on_acquired: Callable[[list[int]], Awaitable[None]],
    ) -> None:
        self.account = account
        self.count = account.names.partitions
        self._on_lost = on_lost
        self._drain = drain
        self._on_acquired = on_acquired
        self.owned: dict[int, _Lease] = {}
        self.releasing: set[int] = set()
        self.host_id = uuid.uuid4().hex
        """This store's host blob, `hosts/<host_id>`: its owners are in its metadata."""
        self._host: _Lease | None = None
        self._owners: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._started = False

    # --- questions -----------------------------------------------------------------------
    def claimable(self) -> set[int]:
        """Partitions whose episodes this host may start."""
        return {p for p, lease in self.owned.items() if lease.fresh()} - self.releasing

    def tenure(self, partition: int) -> int | None:
        """This host's current tenure of `partition`, None if it does not hold it (fencing:
        an episode commits only in the tenure it was claimed in)."""
        lease = self.owned.get(partition)
        return lease.tenure if lease is not None and lease.fresh() else None

    async def live_owners(self) -> set[str]:
        """Owners registered by hosts whose host lease is held (this one's included)."""
        live = set(self._owners)
        blobs = self.account.leases.list_blobs(name_starts_with=_HOSTS, include=["metadata"])
        async for blob in blobs:
            if blob.lease.state == "leased":
                live.update(_owners_of(blob.metadata))
        return live

    async def _bury(self, name: str) -> None:
        """Delete a dead host's blob (best effort)."""
        with contextlib.suppress(AzureError):
            await self.account.leases.delete_blob(name)

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Take this host's share now, then keep leases renewed and shares balanced."""
        if self._started:
            return
        await self._balance()
        self._started = True
        self._task = asyncio.create_task(self._run(), name="dfhost-azure-partitions")

    async def register(self, owner: str) -> None:
        """Hold this store's host blob, listing `owner` among its owners, for as long as the
        store runs. One blob per store, however many owners (engines) it has: the fair share
        counts hosts, not owners."""
        if owner in self._owners:
            return
        self._owners.append(owner)
        metadata = {"owners": quote(json.dumps(self._owners))}
        blob = self.account.leases.get_blob_client(_HOSTS + self.host_id)
        if self._host is None:
            await blob.upload_blob(b"", overwrite=True, metadata=metadata)
            lease = BlobLeaseClient(blob)
            await lease.acquire(lease_duration=LEASE_SECONDS)
            self._host = _Lease(lease, time.monotonic())
        else:
            await blob.set_blob_metadata(metadata, lease=self._host.client)

    async def stop(self) -> None:
        """Give up every partition and unregister, so the others take over at once (the
        caller hands back the messages it holds)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        host, self._host = self._host, None
        leases = [*self.owned.values(), *([] if host is None else [host])]
        self.owned.clear()
        self.releasing.clear()
        await asyncio.gather(*(lease.client.release() for lease in leases), return_exceptions=True)
        if host is not None:
            await self._bury(_HOSTS + self.host_id)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self._renew()
                await self._balance()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an outage: leases lapse, others take over
                log.warning("dfhost: partition leases of %s: %s", self.account.label, exc)

    async def _renew(self) -> None:
        async def renew(lease: _Lease) -> bool:
            try:
                await lease.client.renew()
            except (ResourceNotFoundError, ResourceExistsError) as exc:
                log.warning("dfhost: lost a lease in %s: %s", self.account.label, one_line(exc))
                return False
            except AzureError as exc:
                # Unreachable: keep trying; `fresh()` stops us relying on it in time.
                log.warning("dfhost: could not renew a lease: %s", one_line(exc))
                return True
            lease.renewed = time.monotonic()
            return True

        for partition, lease in list(self.owned.items()):
            if not await renew(lease) or not lease.fresh():
                self._lose(partition)
        if self._host is not None and not await renew(self._host):
            # Lapsed (a long stall) and perhaps buried: register again.
            self._host, owners, self._owners = None, self._owners, []
            with contextlib.suppress(AzureError):
                for owner in owners:
                    await self.register(owner)

    def _lose(self, partition: int) -> None:
        if self.owned.pop(partition, None) is not None:
            self.releasing.discard(partition)
            log.warning("dfhost: no longer owns partition %d of %s", partition, self.account.label)
            self._on_lost(partition)

    async def _balance(self) -> None:
        states: dict[int, str] = {}
        hosts = 0
        dead: list[str] = []
        """Host blobs of hosts that died (no lease for a minute)."""
        # Younger unleased host blobs may belong to hosts still registering.
        stale = datetime.now(UTC) - timedelta(minutes=1)
        async for blob in self.account.leases.list_blobs():
            if blob.name.startswith("control-"):
                with contextlib.suppress(ValueError):
                    states[int(blob.name[len("control-") :])] = str(blob.lease.state)
            elif blob.name.startswith(_HOSTS):
                if blob.lease.state == "leased":
                    hosts += 1
                elif blob.last_modified is not None and blob.last_modified < stale:
                    dead.append(blob.name)
        for name in dead:
            await self._bury(name)
        if self._host is None:
            hosts += 1  # a store that claims without registering still counts
        target = math.ceil(self.count / max(1, hosts))
        mine = sorted(self.owned)
        if len(mine) > target:
            for partition in mine[target:]:
                await self._hand_back(partition)
            return
        free = [
            p
            for p in range(self.count)
            if p not in self.owned and states.get(p, "available") != "leased"
        ]
        wanted = free[: max(0, target - len(mine))]
        missing = [p for p in wanted if p not in states]  # a new hub: create its lease blobs
        await asyncio.gather(
            *(
                self.account.leases.upload_blob(f"control-{p:02d}", b"", overwrite=False)
                for p in missing
            ),
            return_exceptions=True,  # another host created it first: fine
        )
        leases = [
            BlobLeaseClient(self.account.leases.get_blob_client(f"control-{p:02d}")) for p in wanted
        ]
        results = await asyncio.gather(
            *(lease.acquire(lease_duration=LEASE_SECONDS) for lease in leases),
            return_exceptions=True,
        )
        acquired: list[int] = []
        for partition, lease, result in zip(wanted, leases, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, (ResourceExistsError, ResourceNotFoundError)):
                    raise result
                continue  # another host was quicker
            self.owned[partition] = _Lease(lease, time.monotonic())
            acquired.append(partition)
        if acquired:
            log.info("dfhost: owns partitions %s of %s", acquired, self.account.label)
            try:
                await self._on_acquired(acquired)
            except Exception as exc:
                log.warning("dfhost: recovery of partitions %s: %s", acquired, exc)

    async def _hand_back(self, partition: int) -> None:
        lease = self.owned.get(partition)
        if lease is None:
            return
        self.releasing.add(partition)
        try:
            await self._drain(partition)
        finally:
            self.owned.pop(partition, None)
            self.releasing.discard(partition)
            with contextlib.suppress(AzureError):
                await lease.client.release()
        log.info("dfhost: handed partition %d of %s back", partition, self.account.label)


def _owners_of(metadata: Mapping[str, str] | None) -> list[str]:
    try:
        owners = json.loads(unquote((metadata or {}).get("owners", "[]")))
    except ValueError:
        return []
    return [str(o) for o in owners] if isinstance(owners, list) else []
