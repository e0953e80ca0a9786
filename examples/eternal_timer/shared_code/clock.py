"""The app's own helper module, imported by the activity as `from shared_code import clock`."""

from datetime import datetime


def local_time() -> str:
    """The machine's local time, to the second (activities may read the clock; orchestrators
    must use context.current_utc_datetime)."""
    return datetime.now().astimezone().isoformat(timespec="seconds")
