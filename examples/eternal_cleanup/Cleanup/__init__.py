"""The activity: the actual cleanup work. Activities may do I/O, take time and fail; each
call runs once per cycle (unlike orchestrator code, it is never replayed)."""

import logging
from datetime import datetime, timezone


def main(cycle: int) -> dict:
    logging.info("Cleanup: running cycle %s", cycle)
    removed = 0  # delete expired files / rows here and count them
    # The return value must be JSON-serialisable: it is stored in the orchestration history.
    return {"cycle": cycle, "removed": removed, "at": datetime.now(timezone.utc).isoformat()}
