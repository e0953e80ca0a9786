"""The SQLite task hub: one file, shared by the hosts and clients of one machine."""

from dfhost.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
