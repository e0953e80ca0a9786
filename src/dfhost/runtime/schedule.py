"""Timer-trigger schedules: NCRONTAB expressions and TimeSpans, and their next occurrences.

The dialect is NCrontab's, which the Azure Functions timer trigger uses:

- Six fields `second minute hour day month day-of-week`, or five (standard cron, no seconds:
  the second is 0). Each field is `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`
  (from a to the field's maximum), or a comma list of those.
- Months and weekdays may be English names, case-insensitive, abbreviated to 3 letters or more
  (`Jan`, `january`, `Tue`, `Thurs`). Day-of-week is 0-6 with 0 = Sunday; 7 is refused, as
  NCrontab refuses it (write 0 or Sun).
- Day-of-month and day-of-week are ANDed: `0 0 0 13 * Fri` is Friday the 13th only (NCrontab's
  rule; Vixie cron would OR them).
- Refused where NCrontab would silently guess: reversed ranges (NCrontab swaps `5-1` into
  `1-5`), one- and two-letter name prefixes (NCrontab takes the first name that matches), and
  schedules that never fire (`0 0 0 30 Feb *`).

A TimeSpan (`hh:mm`, `hh:mm:ss`, `d.hh:mm:ss`, as `dfhost.config.parse_timespan` reads host.json
durations, or a bare number of days `d`, as .NET's TimeSpan.Parse reads it) fires every period,
counted from the Unix epoch in UTC, so that every host sharing a task hub agrees on the
occurrences (Azure counts from the host's start instead).

Cron schedules are matched against the wall clock of a time zone (UTC unless the
`WEBSITE_TIME_ZONE` app setting names an IANA zone). Daylight-saving transitions follow the
Functions host (`CronSchedule.GetNextOccurrence` in azure-webjobs-sdk-extensions):

- Clocks go forward: a wall time in the skipped hour fires shifted forward by the gap (a daily
  02:30 fires at 03:30 on that day), and once only, even if that coincides with another
  occurrence.
- Clocks go back: "interval" schedules (the seconds, minutes or hours field holds two
  consecutive values, e.g. `*` or `*/1` or `0-5`) fire in both passes of the repeated hour;
  "point-in-time" schedules (`0 30 1 * * *`) fire in the first pass only.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dfhost.config import SettingsError, parse_timespan

__all__ = [
    "CronSchedule",
    "IntervalSchedule",
    "Schedule",
    "ScheduleError",
    "parse_schedule",
    "time_zone_named",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)
_MONTHS = (
    *("january", "february", "march", "april", "may", "june", "july", "august"),
    *("september", "october", "november", "december"),
)
_WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_GREGORIAN_CYCLE_YEARS = 400  # the calendar (weekdays included) repeats every 400 years


class ScheduleError(ValueError):
    """A schedule or time zone that cannot be used; the message is one line."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: Sequence[str] = ()


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 6, _WEEKDAYS),
)


@dataclass(frozen=True)
class CronSchedule:
    """An NCRONTAB schedule in a time zone. Build it with `parse_schedule`."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: tuple[int, ...]
    weekdays: frozenset[int]
    """0 = Sunday."""
    time_zone: tzinfo = UTC
    is_interval: bool = field(init=False)
    """Fires in both passes of a repeated (fall-back) hour; see the module docstring."""

    def __post_init__(self) -> None:
        consecutive = any(
            any(b - a == 1 for a, b in pairwise(values))
            for values in (self.seconds, self.minutes, self.hours)
        )
        object.__setattr__(self, "is_interval", consecutive)

    @property
    def description(self) -> str:
        return f"Cron: '{self.expression}'"

    @property
    def monitor_by_default(self) -> bool:
        """Azure persists the status of schedules that fire at most once a minute."""
        return len(self.seconds) == 1

    def next_occurrence(self, after: datetime) -> datetime:
        """The first occurrence strictly after `after` (timezone-aware), in UTC."""
        if after.tzinfo is None:
            raise ValueError("next_occurrence needs a timezone-aware datetime")
        tz = self.time_zone
        if tz is UTC:
            return self._next_wall_time(after.astimezone(UTC).replace(tzinfo=None)).replace(
                tzinfo=UTC
            )
        local = after.astimezone(tz)
        wall = local.replace(tzinfo=None, fold=0)
        best: datetime | None = None
        best_wall: datetime | None = None
        t = wall
        # Wall times map to instants monotonically except across a gap, where a shifted wall
        # time can land after later ones: keep scanning until past the best one's wall time.
        while best_wall is None or t < best_wall:
            t = self._next_wall_time(t)
            for fold in (0, 1) if self.is_interval and _is_repeated(t, tz) else (0,):
                instant = t.replace(tzinfo=tz, fold=fold).astimezone(UTC)
                if instant > after and (best is None or instant < best):
                    best = instant
                    best_wall = best.astimezone(tz).replace(tzinfo=None, fold=0)
        assert best is not None
        if self.is_interval and local.fold == 0 and _is_repeated(wall, tz):
            # `after` is in the first pass of a repeated hour: the second pass may hold an
            # earlier occurrence than anything after `wall`.
            second = self._second_pass_occurrence(wall, tz)
            if second is not None and second < best:
                best = second
        return best

    def _second_pass_occurrence(self, wall: datetime, tz: tzinfo) -> datetime | None:
        """The first occurrence in the second pass of the repeated hour holding `wall`."""
        early, late = (wall.replace(tzinfo=tz, fold=f).utcoffset() for f in (0, 1))
        assert early is not None and late is not None
        span = early - late
        t = wall - span - _ONE_SECOND
        while True:
            t = self._next_wall_time(t)
            if t > wall + span:
                return None
            if _is_repeated(t, tz):
                return t.replace(tzinfo=tz, fold=1).astimezone(UTC)

    def _next_wall_time(self, after: datetime) -> datetime:
        """The first naive wall time strictly after `after` that matches every field."""
        found = self._search(after)
        if found is None:  # parse_schedule refuses schedules that never fire
            raise ScheduleError(f"schedule '{self.expression}' has no occurrence after {after}")
        return found

    def _search(self, after: datetime) -> datetime | None:
        start = after.replace(microsecond=0) + _ONE_SECOND
        day = start.date()
        clock: tuple[int, int, int] | None = (start.hour, start.minute, start.second)
        last_year = day.year + _GREGORIAN_CYCLE_YEARS
        while day.year <= last_year:
            if day.month not in self.months:
                day = self._next_month(day)
                clock = None
                continue
            if day.day in self.days and (day.isoweekday() % 7) in self.weekdays:
                found = self._first_time(clock or (0, 0, 0))
                if found is not None:
                    return datetime.combine(day, time(*found))
            day += timedelta(days=1)
            clock = None
        return None

    def _next_month(self, day: date) -> date:
        index = bisect_left(self.months, day.month + 1)
        if index < len(self.months):
            return date(day.year, self.months[index], 1)
        return date(day.year + 1, self.months[0], 1)

    def _first_time(self, at: tuple[int, int, int]) -> tuple[int, int, int] | None:
        """The first (hour, minute, second) of the schedule at or after `at` in a day."""
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        h, m, s = at
        hi = bisect_left(hours, h)
        if hi == len(hours):
            return None
        if hours[hi] > h:
            return hours[hi], minutes[0], seconds[0]
        mi = bisect_left(minutes, m)
        if mi < len(minutes):
            if minutes[mi] > m:
                return h, minutes[mi], seconds[0]
            si = bisect_left(seconds, s)
            if si < len(seconds):
                return h, m, seconds[si]
            if mi + 1 < len(minutes):
                return h, minutes[mi + 1], seconds[0]
        if hi + 1 < len(hours):
            return hours[hi + 1], minutes[0], seconds[0]
        return None


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule: every `period`, on a grid counted from the Unix epoch (UTC)."""

    expression: str
    period: timedelta

    @property
    def description(self) -> str:
        return f"TimeSpan: '{self.expression}'"

    @property
    def monitor_by_default(self) -> bool:
        return self.period >= timedelta(minutes=1)

    def next_occurrence(self, after: datetime) -> datetime:
        """The first grid point strictly after `after` (timezone-aware), in UTC."""
        if after.tzinfo is None:
            raise ValueError("next_occurrence needs a timezone-aware datetime")
        elapsed = after - _EPOCH
        periods = elapsed // self.period + 1
        return _EPOCH + periods * self.period


Schedule = CronSchedule | IntervalSchedule


def parse_schedule(text: str, time_zone: tzinfo = UTC) -> Schedule:
    """Parse an NCRONTAB expression or a TimeSpan. Raises ScheduleError (one line)."""
    expression = " ".join(str(text).split())
    tokens = expression.split(" ") if expression else []
    if len(tokens) in (5, 6):
        return _parse_cron(expression, tokens, time_zone)
    if len(tokens) == 1 and re.fullmatch(r"[\d.:]+", tokens[0]):
        return _parse_timespan(expression)
    raise ScheduleError(
        f"schedule '{text}' is neither an NCRONTAB expression (6 fields: second minute hour "
        "day month day-of-week, or 5 without the seconds) nor a TimeSpan (hh:mm:ss)"
    )


def time_zone_named(name: str | None) -> tzinfo:
    """The zone for a WEBSITE_TIME_ZONE value: UTC when unset, else an IANA name."""
    if name is None or not name.strip() or name.strip().upper() in ("UTC", "ETC/UTC"):
        return UTC
    name = name.strip()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    hint = (
        "a Windows time zone name; use the IANA name (e.g. America/New_York)"
        if " " in name
        else "not a known IANA time zone name (e.g. Europe/Paris)"
    )
    raise ScheduleError(f"WEBSITE_TIME_ZONE '{name}' is {hint}")


# --------------------------------------------------------------------------------------------
# Cron expressions


def _parse_cron(expression: str, tokens: list[str], time_zone: tzinfo) -> CronSchedule:
    fields = _FIELDS if len(tokens) == 6 else _FIELDS[1:]
    values: dict[str, list[int]] = {"second": [0]}
    for spec, token in zip(fields, tokens, strict=True):
        try:
            values[spec.name] = _parse_field(spec, token)
        except ScheduleError as exc:
            raise ScheduleError(f"schedule '{expression}': {spec.name} field: {exc}") from None
    schedule = CronSchedule(
        expression=expression,
        seconds=tuple(values["second"]),
        minutes=tuple(values["minute"]),
        hours=tuple(values["hour"]),
        days=frozenset(values["day"]),
        months=tuple(values["month"]),
        weekdays=frozenset(values["day-of-week"]),
        time_zone=time_zone,
    )
    if schedule._search(datetime(2000, 1, 1)) is None:
        raise ScheduleError(
            f"schedule '{expression}' never fires: no date matches its day, month and "
            "day-of-week fields (all three must match)"
        )
    return schedule


def _parse_field(spec: _Field, token: str) -> list[int]:
    chosen: set[int] = set()
    for item in token.split(","):
        chosen.update(_parse_item(spec, item))
    return sorted(chosen)


def _parse_item(spec: _Field, item: str) -> Iterable[int]:
    if not item:
        raise ScheduleError("empty list item")
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise ScheduleError(f"'{item}': the step after / must be a whole number from 1")
        step = int(step_text)
    if base == "*":
        low, high = spec.low, spec.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(spec, first), _value(spec, last)
        if low > high:
            raise ScheduleError(
                f"'{item}': the range is reversed; write {high}-{low}, or split a range that "
                "wraps around into two"
            )
    else:
        low = _value(spec, base)
        high = spec.high if slash else low  # NCrontab: a/n means a-max/n
    return range(low, high + 1, step)


def _value(spec: _Field, text: str) -> int:
    if text.isdigit():
        value = int(text)
        if not spec.low <= value <= spec.high:
            extra = " (0 is Sunday; write 0 or Sun)" if spec.name == "day-of-week" else ""
            raise ScheduleError(f"{value} is out of range {spec.low}-{spec.high}{extra}")
        return value
    if spec.names and text.isalpha():
        lowered = text.lower()
        if len(lowered) >= 3:
            for index, name in enumerate(spec.names):
                if name.startswith(lowered):
                    return spec.low + index
    if spec.names:
        examples = f"{spec.names[0][:3].title()} or {spec.names[0].title()}"
        raise ScheduleError(
            f"'{text}' is neither a number ({spec.low}-{spec.high}) nor a {spec.name} name "
            f"(3 letters or more, e.g. {examples})"
        )
    quartz = " (NCRONTAB has no ?, L, W or #)" if set(text) & set("?LW#") else ""
    raise ScheduleError(f"'{text}' is not a number ({spec.low}-{spec.high}){quartz}")


def _is_repeated(wall: datetime, tz: tzinfo) -> bool:
    """Whether the naive wall time occurs twice (the hour repeated when clocks go back)."""
    early = wall.replace(tzinfo=tz, fold=0).utcoffset()
    late = wall.replace(tzinfo=tz, fold=1).utcoffset()
    return early is not None and late is not None and early > late


# --------------------------------------------------------------------------------------------
# TimeSpans


def _parse_timespan(expression: str) -> IntervalSchedule:
    try:
        period = _timespan_period(expression)
        _EPOCH + period  # the grid's first point must be a date Python can hold
    except OverflowError:
        raise ScheduleError(
            f"schedule '{expression}': the period is too long to ever fire"
        ) from None
    if period < _ONE_SECOND:
        raise ScheduleError(f"schedule '{expression}': the period must be at least 1 second")
    return IntervalSchedule(expression=expression, period=period)


def _timespan_period(expression: str) -> timedelta:
    if expression.isdigit():
        return timedelta(days=int(expression))  # .NET reads a bare number as days
    try:
        # The token has no sign (see parse_schedule), so the period is never negative.
        return parse_timespan(expression, "schedule", example="00:05:00")
    except SettingsError as exc:
        raise ScheduleError(str(exc)) from None
