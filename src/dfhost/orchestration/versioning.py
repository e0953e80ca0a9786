"""Orchestration versioning: which instances a host may run, given its `defaultVersion`.

As the Durable Functions extension does (host.json `extensions.durableTask`:
`versionMatchStrategy` None, Strict or CurrentOrOlder, the default; `versionFailureStrategy`
Reject, the default, or Fail): during a rolling upgrade of hosts sharing a task hub, a host
running older orchestrator code must not replay an instance a newer host started. A host
without `defaultVersion` runs every instance.

Versions compare as the extension compares them: no version equals no version and is older
than any; two versions that .NET's `System.Version` parses (2 to 4 dot-separated whole
numbers) compare by their numbers, a missing part below zero; anything else compares as text,
ignoring case.
"""

from __future__ import annotations

from dfhost.config import VersionMatch

__all__ = ["compare_versions", "mismatch"]


def compare_versions(a: str | None, b: str | None) -> int:
    """Negative if `a` is older than `b`, 0 if they are the same version, positive if newer."""
    if not a or not b:
        return (1 if a else 0) - (1 if b else 0)
    numbers_a, numbers_b = _dotnet_version(a), _dotnet_version(b)
    if numbers_a is not None and numbers_b is not None:
        return (numbers_a > numbers_b) - (numbers_a < numbers_b)
    folded_a, folded_b = a.casefold(), b.casefold()
    return (folded_a > folded_b) - (folded_a < folded_b)


def _dotnet_version(text: str) -> tuple[int, ...] | None:
    parts = text.split(".")
    if not 2 <= len(parts) <= 4 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    # .NET's Version leaves a missing build or revision at -1: "1.0" is older than "1.0.0".
    return (*(int(p) for p in parts), *([-1] * (4 - len(parts))))


def mismatch(
    instance_version: str | None, host_version: str | None, strategy: VersionMatch
) -> str | None:
    """Why a host at `host_version` must not run an instance at `instance_version`; None if
    it may."""
    if not host_version or strategy == "None":
        return None
    order = compare_versions(instance_version, host_version)
    versions = f"orchestration version '{instance_version or ''}'"
    if strategy == "Strict" and order != 0:
        return f"The {versions} does not match the worker version '{host_version}'."
    if strategy == "CurrentOrOlder" and order > 0:
        return f"The {versions} is greater than the worker version '{host_version}'."
    return None
