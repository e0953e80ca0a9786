"""Cross-process wake-ups for file-backed task hubs that have no notifications of their own.

The host listens on a FIFO next to the database; a client in another process (the
`dfhost instances` CLI, a script) writes a byte after it enqueued work, and the host's loop
wakes at once instead of at its next timer. A ring with no host listening is a no-op: the work
is found when a host starts. With several hosts listening, a ring wakes one of them, which is
enough for work any host may claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["Doorbell"]

log = logging.getLogger(__name__)


class Doorbell:
    """The FIFO `<database>.wake`. `listen` and `close` run on the event loop's thread."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".wake")
        self._fds: tuple[int, int] | None = None

    def listen(self, on_ring: Callable[[], None]) -> None:
        """Call `on_ring` on this loop whenever another process rings; logs and gives up if
        the FIFO cannot be made (the host still works, it just wakes later)."""
        if self._fds is not None:
            return
        try:
            with contextlib.suppress(FileExistsError):
                os.mkfifo(self.path, 0o600)
            if not stat.S_ISFIFO(os.stat(self.path).st_mode):
                raise OSError(f"{self.path} exists and is not a FIFO")
            reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            # Our own writer keeps the FIFO open; otherwise it reads as EOF, and so is always
            # readable, once the last client has closed it.
            writer = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            log.warning("clients in other processes cannot wake this host: %s", exc)
            return

        def drain() -> None:
            with contextlib.suppress(BlockingIOError):
                while os.read(reader, 4096):
                    pass
            on_ring()

        asyncio.get_running_loop().add_reader(reader, drain)
        self._fds = (reader, writer)

    def close(self) -> None:
        fds, self._fds = self._fds, None
        if fds is None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop any more
            asyncio.get_running_loop().remove_reader(fds[0])
        for fd in fds:
            os.close(fd)

    def ring(self) -> None:
        """Wake the listening host, if there is one. Never blocks, never raises."""
        try:
            if not stat.S_ISFIFO(os.stat(self.path).st_mode):
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # no FIFO yet, or nobody listening (ENXIO)
            return
        try:
            os.write(fd, b"\0")
        except OSError:  # full: the host has a wake-up pending anyway
            pass
        finally:
            os.close(fd)
