"""Instance ids and names: what a caller or an orchestrator may give, so that every task hub
can store it, a URL can address it and a log line can show it.

The same rules serve the client (HTTP API, dashboard, CLI), the orchestration layer (ids an
orchestrator gives its sub-orchestrations) and the OpenAPI document, which publishes the
patterns (valid in Python and ECMAScript alike).
"""

from __future__ import annotations

import re

__all__ = [
    "ENTITY_PART",
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "InvalidArgumentError",
    "InvalidInstanceIdError",
    "check_id",
    "check_text",
    "entity_key_pattern",
    "instance_id_pattern",
    "lookup_id_pattern",
    "shown",
    "text_pattern",
    "validate_instance_id",
]

MAX_ID_LENGTH = 256
"""Characters in an instance id (an entity's `@name@key` included), as the extension allows."""
MAX_NAME_LENGTH = 256
"""Characters in the other names and filters a caller gives: versions, event and operation
names, id prefixes, orchestrator names."""

# Control characters (C0, DEL, C1): NUL is refused by PostgreSQL and Azure Storage, the rest
# by Azure Storage keys, and every one of them forges log lines and confuses terminals.
_CONTROL = "\\x00-\\x1f\\x7f-\\x9f"
# DTFx/Azure Storage refuse these in instance ids (not valid in table keys or URLs).
_FORBIDDEN = "/\\\\#?"
# What str.strip() removes and controls do not already cover: no id starts or ends with it.
_SPACE = " \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"


def _id_regex(first_excluded: str, allow_empty: bool, max_length: int) -> str:
    """A regex (Python's and ECMAScript's alike, so the OpenAPI document can publish it) for
    ids: no control or forbidden character, none of `_SPACE` at either end, not `.` or `..`
    (a URL path would resolve them), at most `max_length` characters."""
    inner = f"[^{_FORBIDDEN}{_CONTROL}]"
    edge = f"[^{_FORBIDDEN}{_CONTROL}{_SPACE}]"
    edge_no_dot = f"[^.{_FORBIDDEN}{_CONTROL}{_SPACE}]"
    first = f"[^{first_excluded}{_FORBIDDEN}{_CONTROL}{_SPACE}]"
    first_no_dot = f"[^.{first_excluded}{_FORBIDDEN}{_CONTROL}{_SPACE}]"
    forms = [
        f"{first_no_dot}{edge}?",  # one or two characters, not starting with a dot
        f"\\.{edge_no_dot}",  # two, starting with a dot: not ".."
        f"{first}{inner}{{1,{max_length - 2}}}{edge}",
    ]
    if allow_empty:
        forms.insert(0, "")
    return f"^(?:{'|'.join(forms)})$"


def instance_id_pattern() -> str:
    """The instance ids a caller may create (orchestrations; entities are `@name@key`)."""
    return _id_regex("@", allow_empty=False, max_length=MAX_ID_LENGTH)


def entity_key_pattern(longest_name: int) -> str:
    """Entity keys (empty allowed: `$` in a URL); with the name, the id `@name@key` must fit
    `MAX_ID_LENGTH`, so the longest possible key depends on the entity name."""
    return _id_regex("", allow_empty=True, max_length=max(2, MAX_ID_LENGTH - 2 - longest_name))


def lookup_id_pattern(orchestration: bool) -> str:
    """Ids to look up: any text without control characters; for orchestration operations
    (events, terminate, ...) not an entity's id either (starting with '@')."""
    first = f"[^@{_CONTROL}]" if orchestration else f"[^{_CONTROL}]"
    return f"^{first}[^{_CONTROL}]*$"


def text_pattern(min_length: int = 0, max_length: int | None = MAX_NAME_LENGTH) -> str:
    """Names and filters: any text without control characters, of a bounded length."""
    return f"^[^{_CONTROL}]{{{min_length},{'' if max_length is None else max_length}}}$"


_INSTANCE_ID = re.compile(instance_id_pattern())
ENTITY_PART = re.compile(_id_regex("", allow_empty=True, max_length=MAX_ID_LENGTH))
_CONTROL_CHAR = re.compile(f"[{_CONTROL}]")
_BAD_ID_CHAR = re.compile(f"[{_FORBIDDEN}{_CONTROL}]")


class InvalidArgumentError(ValueError):
    """An id, name or payload a caller gave cannot be stored, addressed or shown again
    (the HTTP API answers 400 with this message)."""


class InvalidInstanceIdError(InvalidArgumentError):
    """The requested instance id cannot be stored or addressed by URL."""


def shown(text: str) -> str:
    """A refused value in a message: escaped, and cut when long."""
    cut = text if len(text) <= 60 else f"{text[:60]}..."
    return ascii(cut) if _CONTROL_CHAR.search(cut) else f"'{cut}'"


def check_id(instance_id: str, what: str, pattern: re.Pattern[str], max_length: int) -> None:
    if pattern.fullmatch(instance_id):
        return
    quoted = shown(instance_id)
    if not instance_id:
        raise InvalidInstanceIdError(f"{what} must not be empty.")
    if len(instance_id) > max_length:
        raise InvalidInstanceIdError(f"{what} {quoted} is longer than {max_length} characters.")
    bad = sorted(set(_BAD_ID_CHAR.findall(instance_id)))
    if bad:
        listed = " ".join(ascii(c) for c in bad)
        raise InvalidInstanceIdError(f"{what} {quoted} contains invalid characters: {listed}.")
    if instance_id in (".", ".."):
        raise InvalidInstanceIdError(f"{what} must not be '.' or '..'.")
    if instance_id != instance_id.strip():
        raise InvalidInstanceIdError(f"{what} {quoted} starts or ends with white space.")
    raise InvalidInstanceIdError(
        f"{what} {quoted} starts with '@', which is reserved for entities."
    )


def validate_instance_id(instance_id: str) -> None:
    """Raise `InvalidInstanceIdError` for an id that a new orchestration may not have (see
    `instance_id_pattern`)."""
    check_id(instance_id, "Instance ID", _INSTANCE_ID, MAX_ID_LENGTH)


def check_text(
    text: str | None,
    what: str,
    max_length: int | None = MAX_NAME_LENGTH,
    error: type[InvalidArgumentError] = InvalidArgumentError,
) -> None:
    """Names and filters: no control characters, at most `max_length` characters."""
    if text is None:
        return
    if max_length is not None and len(text) > max_length:
        raise error(f"{what} {shown(text)} is longer than {max_length} characters.")
    found = _CONTROL_CHAR.search(text)
    if found is not None:
        raise error(f"{what} {shown(text)} contains a control character ({found.group()!a}).")
