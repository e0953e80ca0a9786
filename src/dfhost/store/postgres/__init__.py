"""The PostgreSQL task hub: several hosts share the work, survive crashes and outages.

URL: `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?hub=NAME&takeover=SECONDS]`
(`postgres://` too; other query parameters are libpq's). For an app, `dfhost.store.app_store_url`
fills in what the URL leaves out from host.json: `hub` from `hubName`, `takeover` from
`storageProvider.taskEventLockTimeout` (`config`). Each task hub is a schema,
`dfhost_<hub in lower case>` (hub `TestHubName` if none is given, as in the Functions host), so
hubs sharing a database never see each other's work. It is created or migrated on start under an
advisory lock, so hosts may start together.

- Work sharing: hosts claim episodes and activities with `FOR UPDATE SKIP LOCKED`; an episode's
  lease token (from a sequence, never reused) fences its commit, so an instance's episodes
  commit one at a time, in order, each once (`claims`). The store takes the contract's
  shortcuts: a claim sends only the history tail the claimer lacks (`known`), a commit leases
  the activities it creates to its host, an activity's completion leases its instance's next
  episode in the same transaction (when no live host holds it), and an instance whose one
  activity runs on its host stays held there (`InstanceHolder`).
- Round trips: claims, commits, completions, starts and events are each one call of a
  server-side function (`routines`), on an autocommit connection; commits and starts made at
  the same time share one statement and one WAL flush (`batches`).
- Hosts: `open_host` registers the owner in `hosts`, and this store writes its heartbeat every
  takeover/6 on the database's clock. A host silent for the takeover window (default 30 s) is
  dead: its leases are claimable at once, and idle hosts wake when that happens (`next_due_at`).
  Closing the store unregisters its hosts and frees their work.
- Wake-ups: every transaction that enqueues work sends `NOTIFY dfhost_<hub>`; one listening
  connection per store wakes `wait_for_work`. Polling is only the fallback: a waiter re-checks
  at least every `POLL_FALLBACK` (10 s), and at once after the listener reconnects.
- Outages: engine-side calls retry with backoff until the database answers again; client calls
  give up after `CLIENT_PATIENCE` with a StoreError. Each outage logs one warning when it
  starts and one line when it ends (psycopg's own warnings about connections it could not
  clean up are dropped). A call whose connection died before its answer came may have
  committed: claims and commits are tagged so a retry hands out what the lost attempt took (a
  commit finds its own tag), and only `send_message` reports the doubt instead of risking a
  duplicate event.

Modules: `config` (URL options and host.json; no psycopg), `store` (the `Store`, heartbeats,
wake-ups), `connections` (the pool, retries through outages, the listener), `batches` (group
commit), `schema` (tables, migrations, rows), `routines` (the server-side functions);
`clients`, `hosts`, `claims` (episodes, activities) and `timers` hold the transactions. The
store's names are imported on first use, so `config` works where the optional driver is not
installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dfhost.store.postgres.config import DEFAULT_HUB, DEFAULT_TAKEOVER

if TYPE_CHECKING:
    from dfhost.store.postgres.store import (
        CLIENT_PATIENCE,
        POLL_FALLBACK,
        SCHEMA_VERSION,
        PostgresStore,
    )

__all__ = [
    "CLIENT_PATIENCE",
    "DEFAULT_HUB",
    "DEFAULT_TAKEOVER",
    "POLL_FALLBACK",
    "SCHEMA_VERSION",
    "PostgresStore",
]
_FROM_STORE = frozenset({"CLIENT_PATIENCE", "POLL_FALLBACK", "SCHEMA_VERSION", "PostgresStore"})


def __getattr__(name: str) -> Any:
    if name in _FROM_STORE:
        from dfhost.store.postgres import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
