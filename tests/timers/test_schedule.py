"""NCRONTAB and TimeSpan schedules: parsing, next occurrences, daylight-saving transitions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dfhost.runtime.schedule import (
    CronSchedule,
    IntervalSchedule,
    ScheduleError,
    parse_schedule,
    time_zone_named,
)

LA = ZoneInfo("America/Los_Angeles")  # 2018: +1 h on Mar 11 at 02:00, -1 h on Nov 4 at 02:00
BERLIN = ZoneInfo("Europe/Berlin")  # 2024: Mar 31 02:00 -> 03:00, Oct 27 03:00 -> 02:00
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # 2024-10-06 02:00 -> 02:30 (a 30-minute gap)
KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30, no DST


def occurrences(expression: str, start: str, count: int, tz: tzinfo = UTC) -> list[str]:
    schedule = parse_schedule(expression, tz)
    moment = datetime.fromisoformat(start)
    found = []
    for _ in range(count):
        moment = schedule.next_occurrence(moment)
        found.append(moment.astimezone(tz).isoformat())
    return found


TABLE: list[tuple[str, tzinfo, str, list[str]]] = [
    # Six fields, seconds first.
    (
        "0 */5 * * * *",
        UTC,
        "2024-05-01T12:03:00+00:00",
        ["2024-05-01T12:05:00+00:00", "2024-05-01T12:10:00+00:00"],
    ),
    (
        "*/15 * * * * *",
        UTC,
        "2024-05-01T12:00:07+00:00",
        ["2024-05-01T12:00:15+00:00", "2024-05-01T12:00:30+00:00", "2024-05-01T12:00:45+00:00"],
    ),
    (
        "5/20 * * * * *",  # a/n: from a to the maximum
        UTC,
        "2024-05-01T12:00:00+00:00",
        ["2024-05-01T12:00:05+00:00", "2024-05-01T12:00:25+00:00", "2024-05-01T12:00:45+00:00"],
    ),
    (
        "0 30 9 * * 1-5",  # Friday, then Monday
        UTC,
        "2024-05-03T10:00:00+00:00",
        ["2024-05-06T09:30:00+00:00", "2024-05-07T09:30:00+00:00"],
    ),
    (
        "0 30 9 * Jan Mon",
        UTC,
        "2024-05-01T00:00:00+00:00",
        ["2025-01-06T09:30:00+00:00", "2025-01-13T09:30:00+00:00"],
    ),
    (
        "0 0 0 * * sunday,SAT",
        UTC,
        "2024-05-01T00:00:00+00:00",
        ["2024-05-04T00:00:00+00:00", "2024-05-05T00:00:00+00:00", "2024-05-11T00:00:00+00:00"],
    ),
    (
        "0 0 12 13 * Fri",  # day-of-month AND day-of-week: Friday the 13th only
        UTC,
        "2024-01-01T00:00:00+00:00",
        ["2024-09-13T12:00:00+00:00", "2024-12-13T12:00:00+00:00", "2025-06-13T12:00:00+00:00"],
    ),
    (
        "0 0 0 29 Feb *",
        UTC,
        "2024-03-01T00:00:00+00:00",
        ["2028-02-29T00:00:00+00:00"],
    ),
    (
        "0 0 0 31 * *",  # months without a 31st are skipped
        UTC,
        "2024-01-31T00:00:00+00:00",
        ["2024-03-31T00:00:00+00:00", "2024-05-31T00:00:00+00:00"],
    ),
    (
        "0 0 8-10/2 * * *",
        UTC,
        "2024-05-01T08:00:00+00:00",
        ["2024-05-01T10:00:00+00:00", "2024-05-02T08:00:00+00:00"],
    ),
    (
        "59 59 23 31 Dec *",
        UTC,
        "2024-12-31T23:59:59+00:00",
        ["2025-12-31T23:59:59+00:00"],
    ),
    # Five fields: standard cron, second 0.
    (
        "*/10 * * * *",
        UTC,
        "2024-05-01T12:03:30+00:00",
        ["2024-05-01T12:10:00+00:00", "2024-05-01T12:20:00+00:00"],
    ),
    # TimeSpans: a grid from the Unix epoch, in UTC.
    (
        "00:00:30",
        UTC,
        "2024-05-01T12:00:10+00:00",
        ["2024-05-01T12:00:30+00:00", "2024-05-01T12:01:00+00:00"],
    ),
    (
        "1.00:00:00",
        LA,
        "2024-05-01T12:00:00+00:00",
        ["2024-05-01T17:00:00-07:00", "2024-05-02T17:00:00-07:00"],
    ),
    # A zone without DST.
    (
        "0 0 9 * * *",
        KOLKATA,
        "2024-05-01T00:00:00+00:00",
        ["2024-05-01T09:00:00+05:30", "2024-05-02T09:00:00+05:30"],
    ),
    # Spring forward: wall times in the skipped hour fire shifted by the gap, once.
    (
        "0 */30 * * * *",
        LA,
        "2018-03-11T01:00:00-08:00",
        ["2018-03-11T01:30:00-08:00", "2018-03-11T03:00:00-07:00", "2018-03-11T03:30:00-07:00"],
    ),
    (
        "0 30 2 * * *",
        LA,
        "2018-03-10T03:00:00-08:00",
        ["2018-03-11T03:30:00-07:00", "2018-03-12T02:30:00-07:00"],
    ),
    (
        "0 0 2 * * *",
        BERLIN,
        "2024-03-30T12:00:00+01:00",
        ["2024-03-31T03:00:00+02:00", "2024-04-01T02:00:00+02:00"],
    ),
    (
        "0 0 2 * * *",
        LORD_HOWE,
        "2024-10-05T12:00:00+10:30",
        ["2024-10-06T02:30:00+11:00", "2024-10-07T02:00:00+11:00"],
    ),
    # Fall back: interval schedules run through both passes of the repeated hour...
    (
        "0 */30 * * * *",
        LA,
        "2018-11-04T00:15:00-07:00",
        [
            "2018-11-04T00:30:00-07:00",
            "2018-11-04T01:00:00-07:00",
            "2018-11-04T01:30:00-07:00",
            "2018-11-04T01:00:00-08:00",
            "2018-11-04T01:30:00-08:00",
            "2018-11-04T02:00:00-08:00",
        ],
    ),
    (
        "0 0 * * * *",
        LA,
        "2018-11-04T00:30:00-07:00",
        ["2018-11-04T01:00:00-07:00", "2018-11-04T01:00:00-08:00", "2018-11-04T02:00:00-08:00"],
    ),
    (
        "0 0,30 * * * *",  # starting inside the second pass
        LA,
        "2018-11-04T01:15:00-08:00",
        ["2018-11-04T01:30:00-08:00", "2018-11-04T02:00:00-08:00"],
    ),
    # ... point-in-time schedules in the first pass only.
    (
        "0 30 1 * * *",
        LA,
        "2018-11-03T00:00:00-07:00",
        ["2018-11-03T01:30:00-07:00", "2018-11-04T01:30:00-07:00", "2018-11-05T01:30:00-08:00"],
    ),
    (
        "0 30 1 * * *",  # starting inside the second pass: 01:30-07:00 has passed
        LA,
        "2018-11-04T01:15:00-08:00",
        ["2018-11-05T01:30:00-08:00"],
    ),
    (
        "0 15 2 * * *",
        BERLIN,
        "2024-10-26T12:00:00+02:00",
        ["2024-10-27T02:15:00+02:00", "2024-10-28T02:15:00+01:00"],
    ),
]


@pytest.mark.parametrize(
    ("expression", "tz", "start", "expected"),
    TABLE,
    ids=[f"{e} from {s} in {getattr(tz, 'key', 'UTC')}" for e, tz, s, _ in TABLE],
)
def test_next_occurrences(expression: str, tz: tzinfo, start: str, expected: list[str]) -> None:
    assert occurrences(expression, start, len(expected), tz) == expected


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("* * * * * 7", "day-of-week field: 7 is out of range 0-6 (0 is Sunday"),
        ("0 5-1 * * * *", "minute field: '5-1': the range is reversed"),
        ("0 0 0 30 Feb *", "never fires"),
        ("0 0 0 31 4,6,9,11 *", "never fires"),
        ("0 0 * * * Ju", "'Ju' is neither a number (0-6) nor a day-of-week name"),
        ("0 0 * * Foo *", "'Foo' is neither a number (1-12) nor a month name"),
        ("0 0 0 ? * *", "NCRONTAB has no ?, L, W or #"),
        ("0 */0 * * * *", "the step after / must be a whole number from 1"),
        ("0 0 24 * * *", "hour field: 24 is out of range 0-23"),
        ("60 * * * * *", "second field: 60 is out of range 0-59"),
        ("0 0 0 0 * *", "day field: 0 is out of range 1-31"),
        ("0 0,,1 * * * *", "empty list item"),
        ("0 -1 * * * *", "minute field"),
        ("* * * *", "neither an NCRONTAB expression"),
        ("* * * * * * *", "neither an NCRONTAB expression"),
        ("", "neither an NCRONTAB expression"),
        ("25:00:00", "hours must be 0-23"),
        ("00:00:00", "at least 1 second"),
        ("1:2:3:4", "is not a duration like 00:05:00"),
    ],
)
def test_invalid_schedules_get_one_clear_line(expression: str, problem: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(expression)
    message = str(caught.value)
    assert problem in message
    assert "\n" not in message


def test_names_and_the_five_field_form() -> None:
    schedule = parse_schedule("0 9 * jan-MAR,December Mon-Fri")
    assert isinstance(schedule, CronSchedule)
    assert schedule.seconds == (0,)
    assert schedule.months == (1, 2, 3, 12)
    assert schedule.weekdays == frozenset(range(1, 6))
    full = parse_schedule("0 0 9 * january,february tuesday,Thurs")
    assert isinstance(full, CronSchedule)
    assert full.months == (1, 2) and full.weekdays == frozenset({2, 4})


@pytest.mark.parametrize(
    ("text", "period"),
    [
        ("00:05:00", timedelta(minutes=5)),
        ("01:30", timedelta(hours=1, minutes=30)),
        ("2.03:04:05", timedelta(days=2, hours=3, minutes=4, seconds=5)),
        ("00:00:01.5", timedelta(seconds=1.5)),
        ("7", timedelta(days=7)),  # .NET reads a bare number as days
    ],
)
def test_timespans(text: str, period: timedelta) -> None:
    schedule = parse_schedule(text)
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.period == period


def test_monitoring_defaults_follow_azure() -> None:
    assert parse_schedule("0 */5 * * * *").monitor_by_default
    assert parse_schedule("*/5 * * * *").monitor_by_default
    assert not parse_schedule("*/30 * * * * *").monitor_by_default
    assert parse_schedule("00:01:00").monitor_by_default
    assert not parse_schedule("00:00:59").monitor_by_default


def test_time_zones() -> None:
    assert time_zone_named(None) is UTC
    assert time_zone_named("UTC") is UTC
    assert time_zone_named(" America/New_York ") == ZoneInfo("America/New_York")
    with pytest.raises(ScheduleError, match="Windows time zone name; use the IANA name"):
        time_zone_named("Eastern Standard Time")
    with pytest.raises(ScheduleError, match="not a known IANA time zone"):
        time_zone_named("Mars/Olympus_Mons")


# --- properties ------------------------------------------------------------------------------

FIELD_RANGES = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]
MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def value_sets(low: int, high: int) -> st.SearchStrategy[frozenset[int]]:
    return st.frozensets(st.integers(low, high), min_size=1, max_size=4)


def render(values: frozenset[int], names: list[str] | None, low: int, style: int) -> str:
    items = []
    for value in sorted(values):
        if names and style % 2:
            name = names[value - low]
            items.append(name.upper() if style % 3 == 0 else name.title())
        else:
            items.append(str(value))
    return ",".join(items)


@st.composite
def cron_fields(draw: st.DrawFn) -> tuple[list[frozenset[int]], str]:
    sets = [draw(value_sets(low, high)) for low, high in FIELD_RANGES]
    style = draw(st.integers(0, 5))
    texts = [
        render(s, None, low, style) for s, (low, _) in zip(sets[:4], FIELD_RANGES, strict=False)
    ]
    texts.append(render(sets[4], MONTH_NAMES, 1, style))
    texts.append(render(sets[5], DAY_NAMES, 0, style))
    return sets, " ".join(texts)


moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
)


def reference_next(sets: list[frozenset[int]], after: datetime) -> datetime | None:
    """Brute force over days and over the matching seconds of a day, UTC, ten years."""
    seconds, minutes, hours, days, months, weekdays = sets
    times = sorted(h * 3600 + m * 60 + s for h in hours for m in minutes for s in seconds)
    day = after.date()
    while day.year <= after.year + 10:
        if day.month in months and day.day in days and day.isoweekday() % 7 in weekdays:
            base = datetime(day.year, day.month, day.day, tzinfo=UTC)
            for offset in times:
                moment = base + timedelta(seconds=offset)
                if moment > after:
                    return moment
        day += timedelta(days=1)
    return None


@settings(max_examples=150, deadline=None, database=None)
@given(cron_fields(), moments)
def test_next_occurrence_matches_a_brute_force_search(
    fields: tuple[list[frozenset[int]], str], after: datetime
) -> None:
    sets, expression = fields
    try:
        schedule = parse_schedule(expression)
    except ScheduleError as exc:
        assert "never fires" in str(exc)
        return
    assert isinstance(schedule, CronSchedule)
    parsed = [
        frozenset(schedule.seconds),
        frozenset(schedule.minutes),
        frozenset(schedule.hours),
        schedule.days,
        frozenset(schedule.months),
        schedule.weekdays,
    ]
    assert parsed == sets
    expected = reference_next(sets, after)
    assume(expected is not None)
    assert schedule.next_occurrence(after) == expected


ZONES = [LA, BERLIN, LORD_HOWE, KOLKATA, ZoneInfo("Europe/London")]
TRANSITIONS = [
    datetime(2018, 3, 11, 9, tzinfo=UTC),
    datetime(2018, 11, 4, 8, tzinfo=UTC),
    datetime(2024, 3, 31, 0, tzinfo=UTC),
    datetime(2024, 10, 27, 0, tzinfo=UTC),
    datetime(2024, 10, 5, 15, tzinfo=UTC),
]


def offset(moment: datetime, zone: ZoneInfo) -> timedelta:
    value = moment.astimezone(zone).utcoffset()
    assert value is not None
    return value


@settings(max_examples=150, deadline=None, database=None)
@given(
    minutes=value_sets(0, 59),
    hours=value_sets(0, 23),
    zone=st.sampled_from(ZONES),
    near=st.sampled_from(TRANSITIONS),
    shift=st.integers(-6 * 3600, 6 * 3600),
)
def test_occurrences_around_dst_transitions(
    minutes: frozenset[int], hours: frozenset[int], zone: ZoneInfo, near: datetime, shift: int
) -> None:
    expression = (
        f"0 {','.join(map(str, sorted(minutes)))} {','.join(map(str, sorted(hours)))} * * *"
    )
    schedule = parse_schedule(expression, zone)
    assert isinstance(schedule, CronSchedule)
    moment = near + timedelta(seconds=shift)
    seen: set[tuple[date, int, int]] = set()
    for _ in range(30):
        following = schedule.next_occurrence(moment)
        assert following > moment
        assert following - moment <= timedelta(days=1, hours=1)
        local = following.astimezone(zone)
        wall = (local.hour, local.minute)
        if not (local.hour in hours and local.minute in minutes):
            # Only a wall time from a skipped hour fires elsewhere: shifted by the gap.
            gap = offset(following, zone) - offset(following - timedelta(hours=1), zone)
            shifted = (local.replace(tzinfo=None) - gap).time()
            assert gap > timedelta(0), (expression, local)
            assert shifted.hour in hours and shifted.minute in minutes, (expression, local)
        key = (local.date(), *wall)
        if key in seen:
            # A wall time fires twice on one day only for interval schedules, in a fall back.
            assert schedule.is_interval and local.fold == 1, (expression, local)
        seen.add(key)
        moment = following


@settings(max_examples=100, deadline=None, database=None)
@given(seconds=st.integers(1, 3 * 86400), after=moments)
def test_timespan_occurrences_are_a_grid(seconds: int, after: datetime) -> None:
    schedule = parse_schedule(
        str(timedelta(seconds=seconds)).replace(" days, ", ".").replace(" day, ", ".")
    )
    assert isinstance(schedule, IntervalSchedule)
    following = schedule.next_occurrence(after)
    assert timedelta(0) < following - after <= schedule.period
    assert (following - datetime(1970, 1, 1, tzinfo=UTC)) % schedule.period == timedelta(0)
