"""The Azure Storage task hub: tables, queues and blobs in one storage account (or Azurite),
committed in steps as DTFx does, with dedupe rules for what a crash between steps sends again.

URL: `azure[:SETTING][?hub=NAME&partitions=N&control_timeout=S&workitem_timeout=S&max_poll=S]`.
The connection string is read from the app setting (environment variable) SETTING, default
`AzureWebJobsStorage`; `UseDevelopmentStorage=true` means Azurite on its default ports.

Layout (hub H; see `codec`): tables `HdfhInstances` (one row per instance: its state),
`HdfhHistory` (history chunks) and `HdfhTimers`; control queues `h-dfh-control-NN`
(`partitions`, default 4; an instance belongs to one by a hash of its id) and the work-item
queue `h-dfh-workitems`; containers `h-dfh-leases` (partition and host leases, see
`partitions`) and `h-dfh-payloads` (texts too long for a queue message or a property).
The `dfh` tag keeps dfhost's objects apart from a Functions host's own hub of the same name.

What a commit guarantees. Azure Storage has no transaction spanning tables and queues, so an
episode commits as DTFx's Azure Storage provider does, in steps, and consumers dedupe:
1. The episode's new history events and its outbox (activities, timers, messages, starts) are
   written as one new history chunk, reachable from nothing yet.
2. The instance row is replaced if its ETag is the one read at the claim: the new state, the
   chunk as the new head of the history, the ids of the messages consumed, `PendingOutbox`.
   This single-entity write is the commit point. It fails (LeaseLostError, nothing visible)
   when anything else wrote the row meanwhile, or when this host no longer holds the
   instance's partition (fencing).
3. The outbox is delivered (work items, control-queue messages, sub-orchestration rows), then
   `PendingOutbox` is cleared.
4. The consumed queue messages are deleted.
A host that dies after 2 leaves the outbox pending: whoever next claims the instance, or takes
its partition over, delivers it again, with the same message ids. A host that dies before 4
leaves messages that reappear after their visibility timeout. Either way a message can arrive
twice; the consumer drops it when the instance row lists its id as consumed (kept 15 minutes),
or when the history already holds its result (a task or sub-orchestration answered, a timer
fired: deduped by event id, at any age), or when it belongs to another generation, epoch or
execution of the instance. An activity runs at least once; its result is recorded once.

Dispatch latency: messages this process sends wake its engine at once (`notify`) and are read
by the next claim. Messages sent by other processes are found by a poller that reads the owned
control queues and peeks at the work-item queue with a back-off from 0.1 s doubling to
`max_poll` (default 1 s) while idle, back to 0.1 s when it finds something. Timers this host
knows of wake it at their due time. Crash recovery: a dead host's partitions are free after at
most 15 s; its held messages reappear after the visibility timeout (`control_timeout`,
`workitem_timeout`, default 30 s; a live host keeps extending them).

Modules: `config` (URL options and host.json), `store` (the `Store`: hosting, polling,
activities, timer triggers), `episodes` (claims and commits), `account` (the service clients),
`codec` (names, rows, messages), `instances` (instance rows and history chunks), `queues`
(messages held), `outbox` (everything sent), `dedupe`, `partitions`, `timers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dfhost.store.azure.store import AzureStore

__all__ = ["AzureStore"]


def __getattr__(name: str) -> Any:
    # The store on first use, so that `config`, which every app's start reads, works where
    # the optional Azure SDK is not installed (`pip install dfhost` on the SQLite default).
    if name == "AzureStore":
        from dfhost.store.azure.store import AzureStore

        return AzureStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
