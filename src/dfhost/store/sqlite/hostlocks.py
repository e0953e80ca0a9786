"""Which hosts sharing a task hub file are alive, from lock files the kernel releases for them.

Each host holds an exclusive `flock` on its own file, `<database>.hosts/<owner>.lock`, for as
long as its store is open. The kernel drops the lock when the process ends however it ends
(SIGKILL included), so a file that someone else can lock belongs to a dead host. Closing the
store just unlocks the file: the next host to look treats it like a crash, frees the leases
and deletes the file. No heartbeats, no clocks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from urllib.parse import quote, unquote

__all__ = ["HostLock", "count_live_hosts"]

_SUFFIX = ".lock"


class HostLock:
    """This host's lock file, and liveness checks of the others. Not thread-safe: the SQLite
    store calls it from its one worker thread."""

    def __init__(self, database: Path, owner: str) -> None:
        self.folder = database.with_name(database.name + ".hosts")
        self.owner = owner
        self._fd: int | None = None

    def hold(self) -> None:
        """Create and lock this host's file. Raises OSError."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self._path(self.owner)
        # Locked before it gets its final name: a host scanning the folder never sees this
        # host's file unlocked, so never mistakes it for a dead one.
        temporary = self.folder / f".{os.getpid()}.{id(self)}.tmp"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.rename(temporary, final)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._fd = fd

    def release(self) -> None:
        """Unlock this host's file (it is deleted by whichever host next finds it unlocked)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def others(self) -> list[str]:
        """Owners of every other lock file in the folder, alive or not."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        owners = [unquote(n[: -len(_SUFFIX)]) for n in names if n.endswith(_SUFFIX)]
        return [o for o in owners if o != self.owner]

    def bury_if_dead(self, owner: str, *, missing_is_dead: bool) -> bool:
        """Whether `owner` is a dead host; if its file is there, delete it.

        A missing file means dead only when `missing_is_dead`: a host opening the hub counts
        every unregistered owner as gone, but a running host leaves such owners (test
        harnesses, hosts that predate lock files) to their leases' expiry.
        """
        if owner == self.owner:
            return False
        path = self._path(owner)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return missing_is_dead
        except OSError:
            return False  # cannot tell: assume alive, its leases expire anyway
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: alive
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # under the lock, so no live host can be holding this file
            return True
        finally:
            os.close(fd)

    def _path(self, owner: str) -> Path:
        return self.folder / (quote(owner, safe="") + _SUFFIX)


def count_live_hosts(database: Path) -> int:
    """How many hosts hold their lock file on `database` now (this one included). Looks
    only: a dead host's file stays for the next host that frees its work."""
    folder = database.with_name(database.name + ".hosts")
    try:
        names = [n for n in os.listdir(folder) if n.endswith(_SUFFIX)]
    except OSError:
        return 0
    live = 0
    for name in names:
        try:
            fd = os.open(folder / name, os.O_RDONLY)
        except OSError:
            continue  # buried meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            live += 1  # held by its host
        finally:
            os.close(fd)  # also drops the shared lock, if we got it
    return live
