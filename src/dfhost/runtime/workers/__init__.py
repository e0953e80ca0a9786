"""User code in worker processes, as Azure runs Python functions in language workers
(`FUNCTIONS_WORKER_PROCESS_COUNT`): `pool.py` is the host's side, `process.py` a worker,
`protocol.py` the frames between them."""

from dfhost.runtime.workers.pool import (
    WorkerCrashedError,
    WorkerError,
    WorkerPool,
    WorkerStartError,
)

__all__ = ["WorkerCrashedError", "WorkerError", "WorkerPool", "WorkerStartError"]
