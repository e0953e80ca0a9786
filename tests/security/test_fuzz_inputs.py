"""Hypothesis against the parsers that read what users and the store hand the host: route
templates, NCRONTAB schedules, function.json/host.json, and stored history events. Each must
answer with a result or its own clear error, never another exception."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dfhost.app.loader import load_app
from dfhost.config import Limits, SettingsError
from dfhost.history import EventType, HistoryEvent
from dfhost.ids import InvalidInstanceIdError, instance_id_pattern, validate_instance_id
from dfhost.runtime.schedule import ScheduleError, parse_schedule
from dfhost.web.route_templates import RouteTemplateError, parse_template
from dfhost.wire import MAX_JSON_DEPTH, api_history, dtfx_event, json_too_deep

FAST = settings(max_examples=300, deadline=None)
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text biased towards each grammar's own characters, so examples get past the first check.
ROUTE_TEXT = st.text(alphabet="{}/?*=:()abcxyz019-._~%,\\ ", max_size=40)
PATHS = st.text(alphabet="/abcxyz019%2F.-_ é", max_size=40)
CRON_TEXT = st.one_of(
    st.text(alphabet="0123456789*/-, ?LW#JanFebMonSunmonfri.:", max_size=40),
    st.lists(
        st.text(alphabet="0123456789*/-,", min_size=1, max_size=8), min_size=5, max_size=6
    ).map(" ".join),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@FAST
@given(template=ROUTE_TEXT, path=PATHS)
def test_route_templates_parse_or_refuse_and_never_crash_matching(template: str, path: str) -> None:
    try:
        parsed = parse_template(template)
    except RouteTemplateError as exc:
        assert str(exc)
        return
    values = parsed.match(path)
    assert values is None or all(isinstance(v, str) for v in values.values())


@FAST
@given(
    segments=st.lists(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), min_size=1, max_size=4),
    value=st.text(alphabet="abc019-_ é/", min_size=1, max_size=10),
)
def test_a_parameter_takes_any_segment_value(segments: list[str], value: str) -> None:
    template = parse_template("/".join([*segments, "{item}"]))
    assert template.match("/".join([*segments, quote(value, safe="")])) == {"item": value}


@FAST
@given(expression=CRON_TEXT)
@example(expression="1000000000")  # found by this test: OverflowError, now a ScheduleError
@example(expression="3000000")  # a period whose first occurrence is past year 9999
def test_ncrontab_parses_or_refuses_and_parsed_schedules_fire(expression: str) -> None:
    try:
        schedule = parse_schedule(expression)
    except ScheduleError as exc:
        assert str(exc)
        return
    after = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    following = schedule.next_occurrence(after)
    assert following > after


@SLOW
@given(
    host_json=st.one_of(
        JSON_VALUES,
        st.dictionaries(
            st.sampled_from(["version", "extensions", "functionTimeout", "logging"]), JSON_VALUES
        ),
    ),
    function_json=st.one_of(
        JSON_VALUES,
        st.fixed_dictionaries(
            {
                "bindings": st.lists(
                    st.dictionaries(
                        st.sampled_from(
                            ["type", "name", "direction", "route", "authLevel", "schedule"]
                        ),
                        JSON_VALUES,
                    ),
                    max_size=3,
                )
            },
            optional={
                "scriptFile": JSON_VALUES,
                "entryPoint": JSON_VALUES,
                "disabled": JSON_VALUES,
            },
        ),
    ),
    raw=st.booleans(),
)
def test_app_loader_reports_bad_json_files_as_load_errors(
    host_json: Any, function_json: Any, raw: bool
) -> None:
    root = Path(tempfile.mkdtemp(prefix="dfhost-fuzz-"))
    try:
        (root / "host.json").write_text(json.dumps(host_json))
        (root / "Fn").mkdir()
        text = json.dumps(function_json)
        (root / "Fn" / "function.json").write_text(text[:-1] if raw and text else text)
        (root / "Fn" / "__init__.py").write_text("def main(x):\n    return x\n")
        app = load_app(root)
        for error in app.errors:
            assert error.message
        try:
            Limits.from_host_json(app.settings.host_json)
        except SettingsError as exc:
            assert str(exc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


EVENT_FIELDS = st.dictionaries(
    st.sampled_from(
        [
            "type",
            "timestamp",
            "event_id",
            "name",
            "input",
            "result",
            "task_scheduled_id",
            "timer_id",
            "fire_at",
            "status",
            "reason",
            "bogus",
        ]
    ),
    st.one_of(
        JSON_VALUES,
        st.sampled_from([int(t) for t in EventType]),
        st.just("2026-01-02T03:04:05.000000Z"),
        st.sampled_from(["Completed", "Failed", "nope"]),
    ),
)


@FAST
@given(data=st.one_of(EVENT_FIELDS, JSON_VALUES), text=st.text(max_size=60))
# Found by this test: a number where text belongs loaded, then broke the HTTP API's history.
@example(data={"type": 4, "timestamp": "2026-01-01T00:00:00Z", "input": 0}, text="")
@example(data={"type": 4, "timestamp": "2026-01-01T00:00:00Z", "event_id": True}, text="")
def test_stored_history_decodes_or_refuses(data: Any, text: str) -> None:
    for source in (json.dumps(data), text):
        try:
            event = HistoryEvent.from_json(source)
        except ValueError as exc:
            assert str(exc)
            continue
        # What decodes can be stored again and served: to the SDK and by the HTTP API.
        assert HistoryEvent.from_json(event.to_json()) == event
        dtfx_event(event, played=True)
        api_history([event], show_input=True, show_output=True)


# Ids near the rules' edges: dots, '@', white space, control and forbidden characters.
ID_TEXT = st.text(
    alphabet=st.sampled_from("a.@ \u00a0\u2028\x00\x1f\x85/#é"), max_size=6
) | st.text(min_size=250, max_size=262, alphabet="ab")


@FAST
@given(instance_id=ID_TEXT)
def test_the_published_id_pattern_is_the_rule_the_client_applies(instance_id: str) -> None:
    """The OpenAPI document publishes `instance_id_pattern`; the API must accept exactly it."""
    published = re.fullmatch(instance_id_pattern(), instance_id) is not None
    try:
        validate_instance_id(instance_id)
    except InvalidInstanceIdError as exc:
        assert not published and str(exc)
        return
    assert published


@FAST
@given(depth=st.integers(0, 400), text=st.text(alphabet='[]{}"\\,:1a ', max_size=40))
def test_json_depth_is_measured_like_the_parser_nests(depth: int, text: str) -> None:
    deep = "[" * depth + text + "]" * depth
    try:
        value = json.loads(deep)
    except (ValueError, RecursionError):
        return  # malformed: the parser's own error is what a caller sees
    nesting, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            nesting = max(nesting, level)
            stack.extend(
                (child, level + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    assert json_too_deep(deep) == (nesting > MAX_JSON_DEPTH)
