"""`dfhost.orchestration.episode`: the work types and the history events that record them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest

from dfhost.history import EventType, HistoryEvent
from dfhost.orchestration.episode import (
    HTTP_ACTIVITY,
    SCHEDULING_TYPES,
    ActivityCall,
    EntityMessage,
    EpisodeInput,
    SubOrchestrationCall,
    TimerRequest,
    Work,
    describe,
    recorded_work,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)

EPISODE = EpisodeInput(
    instance_id="inst-1",
    execution_id="exec-1",
    name="orch",
    input=None,
    parent_instance_id=None,
    past=[],
    new=[HistoryEvent(type=EventType.ORCHESTRATOR_STARTED, timestamp=T0)],
)

EVERY_KIND: list[Work] = [
    ActivityCall(0, "A", '"a"'),
    ActivityCall(1, HTTP_ACTIVITY, "{}"),
    TimerRequest(2, T0 + timedelta(hours=1)),
    SubOrchestrationCall(3, "child", "kid", "[1]", "1.0"),
    EntityMessage(4, "@counter@k", "add", "1", "req-4", signal=False),
    EntityMessage(5, "@counter@k", "reset", None, "req-5", signal=True),
]


def test_every_work_type_has_one_scheduling_event_type() -> None:
    assert {type(w) for w in EVERY_KIND} == set(get_args(Work))
    assert sorted(SCHEDULING_TYPES) == sorted({w.scheduled_event(EPISODE).type for w in EVERY_KIND})


@pytest.mark.parametrize("work", EVERY_KIND, ids=describe)
def test_the_scheduling_event_records_the_work(work: Work) -> None:
    event = work.scheduled_event(EPISODE)
    assert event.timestamp == T0
    assert event.event_id == work.event_id
    assert recorded_work(event) == work
    assert work.changed_from(event) is None


def test_descriptions_name_the_call_as_orchestrator_code_makes_it() -> None:
    assert [describe(w) for w in EVERY_KIND] == [
        "call_activity('A')",
        "call_http()",
        "create_timer()",
        "call_sub_orchestrator('child')",
        "call_entity('@counter@k', 'add')",
        "signal_entity('@counter@k', 'reset')",
    ]


def test_payloads_are_the_inputs_of_activities_and_sub_orchestrations() -> None:
    assert [p for w in EVERY_KIND for p in w.payloads()] == [
        ("input of activity 'A'", '"a"'),
        (f"input of activity '{HTTP_ACTIVITY}'", "{}"),
        ("input of sub-orchestration 'child'", "[1]"),
    ]
