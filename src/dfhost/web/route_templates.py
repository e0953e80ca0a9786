"""Route templates as Azure Functions (ASP.NET Core routing) accepts them in `route`.

Supported: literal segments (matched case-insensitively), `{name}`, optional `{name?}`, defaults
`{name=value}`, constraints `{id:int}` (several may be chained: `{id:int:min(1)}`), complex
segments mixing literals and parameters (`{file}.{ext}`), and a trailing catch-all `{*path}` or
`{**path}`. Parameter values are percent-decoded per segment, so `%2F` inside a segment never
splits it.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from urllib.parse import unquote

__all__ = ["RouteTemplate", "RouteTemplateError", "parse_template"]


class RouteTemplateError(ValueError):
    """The template cannot be parsed, or uses an unknown constraint."""


Check = Callable[[str], bool]


def _int_in(bits: int) -> Check:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def check(value: str) -> bool:
        return bool(_INT_RE.fullmatch(value)) and low <= int(value) <= high

    return check


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_DECIMAL_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")

_SIMPLE_CONSTRAINTS: dict[str, Check] = {
    "int": _int_in(32),
    "long": _int_in(64),
    "bool": lambda v: v.lower() in ("true", "false"),
    "alpha": lambda v: bool(re.fullmatch(r"[A-Za-z]+", v)),
    "guid": _is_guid,
    "double": lambda v: bool(_FLOAT_RE.fullmatch(v)),
    "float": lambda v: bool(_FLOAT_RE.fullmatch(v)),
    "decimal": lambda v: bool(_DECIMAL_RE.fullmatch(v)),
    "datetime": _is_datetime,
    "required": lambda v: v != "",
}


def _int_arg(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise RouteTemplateError(f"constraint {name}({text}) needs an integer argument") from None


def _constraint(name: str, arg: str | None) -> Check:
    key = name.lower()
    if arg is None:
        check = _SIMPLE_CONSTRAINTS.get(key)
        if check is None:
            raise RouteTemplateError(f"unknown route constraint {name!r}")
        return check
    if key == "regex":
        try:
            pattern = re.compile(arg, re.IGNORECASE)
        except re.error as exc:
            raise RouteTemplateError(f"invalid regex({arg}): {exc}") from None
        return lambda v: pattern.search(v) is not None
    args = [a for a in arg.split(",")]
    if key in ("min", "max") and len(args) == 1:
        bound = _int_arg(name, arg)
        is_int = _int_in(64)
        if key == "min":
            return lambda v: is_int(v) and int(v) >= bound
        return lambda v: is_int(v) and int(v) <= bound
    if key == "range" and len(args) == 2:
        low, high = _int_arg(name, args[0]), _int_arg(name, args[1])
        is_int = _int_in(64)
        return lambda v: is_int(v) and low <= int(v) <= high
    if key == "minlength" and len(args) == 1:
        n = _int_arg(name, arg)
        return lambda v: len(v) >= n
    if key == "maxlength" and len(args) == 1:
        n = _int_arg(name, arg)
        return lambda v: len(v) <= n
    if key == "length" and len(args) == 1:
        n = _int_arg(name, arg)
        return lambda v: len(v) == n
    if key == "length" and len(args) == 2:
        low, high = _int_arg(name, args[0]), _int_arg(name, args[1])
        return lambda v: low <= len(v) <= high
    raise RouteTemplateError(f"unknown route constraint {name}({arg})")


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    checks: tuple[Check, ...] = ()
    optional: bool = False
    default: str | None = None
    catch_all: bool = False

    def accepts(self, value: str) -> bool:
        return all(check(value) for check in self.checks)


Part = str | _Param


@dataclass(frozen=True, slots=True)
class _Segment:
    parts: tuple[Part, ...]
    regex: re.Pattern[str] | None = None
    """For complex segments: the whole segment, one group per parameter, in order."""

    @property
    def kind(self) -> Literal["literal", "param", "complex"]:
        if all(isinstance(p, str) for p in self.parts):
            return "literal"
        if len(self.parts) == 1:
            return "param"
        return "complex"


@dataclass(frozen=True, slots=True)
class RouteTemplate:
    """A parsed template; `match` a request path against it."""

    text: str
    segments: tuple[_Segment, ...]
    precedence: tuple[int, ...] = field(compare=False)
    """ASP.NET's inbound precedence digits: sort ascending to try specific routes first."""

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for s in self.segments for p in s.parts if isinstance(p, _Param))

    def match(self, path: str) -> dict[str, str] | None:
        """Route values if `path` (raw, percent-encoded, leading slash optional) matches."""
        path = path.lstrip("/")
        if path.endswith("/"):
            path = path[:-1]  # ASP.NET ignores one trailing slash
        parts = path.split("/") if path else []
        values: dict[str, str] = {}
        if self._match(0, parts, 0, values):
            return values
        return None

    def _match(self, i: int, parts: list[str], j: int, values: dict[str, str]) -> bool:
        if i == len(self.segments):
            return j == len(parts)
        segment = self.segments[i]
        first = segment.parts[0]
        if isinstance(first, _Param) and first.catch_all:
            rest = "/".join(unquote(p) for p in parts[j:])
            if rest:
                if not first.accepts(rest):
                    return False
                values[first.name] = rest
            elif first.default is not None:
                values[first.name] = first.default
            return True
        if j == len(parts):
            # Missing trailing segments are fine when they are all optional parameters.
            for rest_segment in self.segments[i:]:
                param = rest_segment.parts[0]
                if rest_segment.kind != "param" or not isinstance(param, _Param):
                    return False
                if not (param.optional or param.default is not None or param.catch_all):
                    return False
                if param.default is not None:
                    values[param.name] = param.default
            return True
        text = unquote(parts[j])
        found = _match_segment(segment, text)
        if found is None:
            return False
        values.update(found)
        return self._match(i + 1, parts, j + 1, values)


def _match_segment(segment: _Segment, text: str) -> dict[str, str] | None:
    kind = segment.kind
    if kind == "literal":
        literal = "".join(p for p in segment.parts if isinstance(p, str))
        return {} if text.lower() == literal.lower() else None
    if kind == "param":
        param = segment.parts[0]
        assert isinstance(param, _Param)
        if not text or not param.accepts(text):
            return None
        return {param.name: text}
    assert segment.regex is not None
    m = segment.regex.fullmatch(text)
    if m is None:
        return None
    params = [p for p in segment.parts if isinstance(p, _Param)]
    found: dict[str, str] = {}
    for index, param in enumerate(params):
        value = m.group(index + 1)
        if not param.accepts(value):
            return None
        found[param.name] = value
    return found


def _split_segments(text: str) -> list[str]:
    """Split on `/` outside parameters (a regex constraint may contain a slash)."""
    segments: list[str] = []
    current: list[str] = []
    in_param = False
    i = 0
    while i < len(text):
        if text.startswith(("{{", "}}"), i):  # escaped brace, inside or outside a parameter
            current.append(text[i : i + 2])
            i += 2
            continue
        c = text[i]
        if c == "{":
            if in_param:
                raise RouteTemplateError(f"'{{' inside a parameter of route {text!r}")
            in_param = True
        elif c == "}":
            if not in_param:
                raise RouteTemplateError(f"unbalanced '}}' in route {text!r}")
            in_param = False
        if c == "/" and not in_param:
            segments.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    if in_param:
        raise RouteTemplateError(f"unbalanced '{{' in route {text!r}")
    segments.append("".join(current))
    return segments


def _parse_parts(segment: str, template: str) -> list[Part]:
    parts: list[Part] = []
    literal: list[str] = []
    i = 0
    while i < len(segment):
        if segment.startswith(("{{", "}}"), i):
            literal.append(segment[i])
            i += 2
            continue
        if segment[i] == "{":
            end = _closing_brace(segment, i)
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(_parse_param(segment[i + 1 : end], template))
            i = end + 1
            continue
        if segment[i] == "}":
            raise RouteTemplateError(f"unbalanced '}}' in route {template!r}")
        literal.append(segment[i])
        i += 1
    if literal:
        parts.append("".join(literal))
    return parts


def _closing_brace(segment: str, start: int) -> int:
    i = start + 1
    while i < len(segment):
        if segment.startswith(("{{", "}}"), i):
            i += 2
        elif segment[i] == "}":
            return i
        else:
            i += 1
    raise RouteTemplateError(f"unbalanced '{{' in route segment {segment!r}")


_NAME_RE = re.compile(r"[^:?=*{}/]+")


def _parse_param(body: str, template: str) -> _Param:
    text = body.replace("{{", "{").replace("}}", "}")
    catch_all = False
    if text.startswith("**"):
        catch_all, text = True, text[2:]
    elif text.startswith("*"):
        catch_all, text = True, text[1:]
    m = _NAME_RE.match(text)
    if m is None:
        raise RouteTemplateError(f"route parameter {{{body}}} in {template!r} has no name")
    name = m.group(0).strip()
    rest = text[m.end() :]
    checks: list[Check] = []
    optional = False
    default: str | None = None
    while rest:
        if rest.startswith(":"):
            cm = re.match(r":([A-Za-z]+)", rest)
            if cm is None:
                raise RouteTemplateError(f"bad constraint in {{{body}}} of route {template!r}")
            cname = cm.group(1)
            rest = rest[cm.end() :]
            arg: str | None = None
            if rest.startswith("("):
                close = _closing_paren(rest)
                arg, rest = rest[1:close], rest[close + 1 :]
            checks.append(_constraint(cname, arg))
        elif rest == "?":
            optional, rest = True, ""
        elif rest.startswith("="):
            default, rest = rest[1:], ""
        else:
            raise RouteTemplateError(f"cannot parse {{{body}}} in route {template!r}")
    return _Param(name, tuple(checks), optional, default, catch_all)


def _closing_paren(text: str) -> int:
    depth = 0
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
    raise RouteTemplateError(f"unbalanced '(' in constraint {text!r}")


def _complex_regex(parts: list[Part]) -> re.Pattern[str]:
    pieces = ["(.+?)" if isinstance(p, _Param) else re.escape(p) for p in parts]
    return re.compile("".join(pieces), re.IGNORECASE | re.DOTALL)


def parse_template(text: str) -> RouteTemplate:
    """Parse a route template (leading `/` or `~/` ignored); raises `RouteTemplateError`."""
    clean = text.strip()
    if clean.startswith("~"):
        clean = clean[1:]
    clean = clean.strip("/")
    raw_segments = _split_segments(clean) if clean else []
    segments: list[_Segment] = []
    precedence: list[int] = []
    names: set[str] = set()
    for index, raw in enumerate(raw_segments):
        if raw == "":
            raise RouteTemplateError(f"route {text!r} has an empty segment ('//')")
        parts = _parse_parts(raw, text)
        params = [p for p in parts if isinstance(p, _Param)]
        for p in params:
            if p.name.lower() in names:
                raise RouteTemplateError(f"route {text!r} uses parameter {p.name!r} twice")
            names.add(p.name.lower())
            if p.catch_all and (len(parts) > 1 or index != len(raw_segments) - 1):
                raise RouteTemplateError(
                    f"catch-all {{*{p.name}}} must be the whole last segment of route {text!r}"
                )
            if (p.optional or p.default is not None) and len(parts) > 1:
                raise RouteTemplateError(
                    f"optional {{{p.name}}} must be a whole segment in route {text!r}"
                )
        if params and len(parts) > 1:
            adjacent = any(
                isinstance(a, _Param) and isinstance(b, _Param)
                for a, b in itertools.pairwise(parts)
            )
            if adjacent:
                raise RouteTemplateError(
                    f"route {text!r}: parameters in one segment need a literal between them"
                )
            segments.append(_Segment(tuple(parts), _complex_regex(parts)))
            precedence.append(2)
        else:
            segments.append(_Segment(tuple(parts)))
            if not params:
                precedence.append(1)
            elif params[0].catch_all:
                precedence.append(5)
            elif params[0].checks:
                precedence.append(3)
            else:
                precedence.append(4)
    for index, segment in enumerate(segments):
        first = segment.parts[0]
        is_optional = isinstance(first, _Param) and (first.optional or first.default is not None)
        later = segments[index + 1 :]
        if is_optional and any(
            not (
                isinstance(s.parts[0], _Param)
                and (s.parts[0].optional or s.parts[0].default is not None or s.parts[0].catch_all)
            )
            for s in later
        ):
            raise RouteTemplateError(
                f"route {text!r}: only the last segments may be optional parameters"
            )
    return RouteTemplate(text, tuple(segments), tuple(precedence))
