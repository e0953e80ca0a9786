"""Testing orchestrations: `TestHost` (an app on an in-memory hub, on a virtual clock), golden
histories, and replaying stored instances against new code."""

from dfhost.testing.clock import VirtualClock
from dfhost.testing.golden import (
    HISTORY_FORMAT,
    ReplayReport,
    export_history,
    replay_events,
    replay_history,
    replay_instances,
)
from dfhost.testing.host import TestHost

__all__ = [
    "HISTORY_FORMAT",
    "ReplayReport",
    "TestHost",
    "VirtualClock",
    "export_history",
    "replay_events",
    "replay_history",
    "replay_instances",
]
