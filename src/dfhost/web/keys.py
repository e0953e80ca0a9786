"""Access keys as Azure Functions has them: a master key, host keys, system keys and function keys.

Sources, in order (a later one wins for the same key):
- the keys file, `keys.json` in the task hub's folder, created on the first start that needs
  keys with a random master key, host key `default` and system key `durabletask_extension`
  (mode 0600), unless the environment gives all three (then a read-only folder is fine). Its
  shape is that of Azure's `listKeys` answer, plus per-function keys:
  `{"masterKey": "...", "functionKeys": {"default": "..."}, "systemKeys": {...},
  "functions": {"HttpStart": {"default": "..."}}}`;
- environment variables named as the Functions host names keys in its Kubernetes secrets:
  `host.master`, `host.function.NAME`, `host.systemKey.NAME`, `functions.FUNCTION.NAME`. Names
  are case-insensitive and `__` may stand for `.`, for shells (`host__master=...`).

Several hosts sharing a task hub on several machines should get their keys from the
environment: each machine would otherwise create its own file.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "KEYS_FILE",
    "MIN_KEY_LENGTH",
    "SYSTEM_KEY",
    "KeySet",
    "KeysError",
    "LoadedKeys",
    "load_keys",
    "new_key",
]

KEYS_FILE = "keys.json"
SYSTEM_KEY = "durabletask_extension"
"""The system key of the Durable Functions extension: it opens the management API."""
MIN_KEY_LENGTH = 16


class KeysError(Exception):
    """The keys file or a key variable is unusable (one line for the user)."""


@dataclass(frozen=True)
class KeySet:
    master: str
    host: Mapping[str, str] = field(default_factory=dict)
    """Host keys by name: valid for every function."""
    system: Mapping[str, str] = field(default_factory=dict)
    functions: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Function keys by function name (lower case), then key name."""

    def function_keys(self, function: str) -> list[str]:
        """Every key that opens a function with authLevel `function`."""
        own = self.functions.get(function.lower(), {})
        return [*own.values(), *self.host.values(), self.master]

    def system_keys(self, name: str = SYSTEM_KEY) -> list[str]:
        """The keys that open an extension's endpoints: its system key, or the master key."""
        found = self.system.get(name)
        return [self.master] if found is None else [found, self.master]


@dataclass(frozen=True)
class LoadedKeys:
    keys: KeySet
    created: Path | None = None
    """The keys file, when this call created it (its values are to be shown once)."""
    shown: Mapping[str, str] = field(default_factory=dict)
    """The created file's values that are in effect (not overridden by the environment)."""


def new_key() -> str:
    return secrets.token_urlsafe(40)


def load_keys(folder: Path, env: Mapping[str, str] | None = None) -> LoadedKeys:
    """The keys in effect for a host whose task hub lives in `folder`; creates the keys file
    there when it does not exist. Raises `KeysError`."""
    env = os.environ if env is None else env
    path = folder / KEYS_FILE
    created = None
    overrides = _from_env(env)
    if overrides.keys() >= _ENV_COVERS_FILE and not path.exists():
        # Every key a new file would hold comes from the environment: nothing to write.
        data: dict[str, Any] = {"masterKey": overrides[("host", "master", "")]}
    elif (new := _create(path)) is None:
        data = _read(path)
    else:
        data, created = new, path
    master, host, system, functions = _from_file(data, path)
    master = overrides.pop(("host", "master", ""), master)
    for (scope, group, name), value in overrides.items():
        if scope == "host":
            (host if group == "function" else system)[name] = value
        else:
            functions.setdefault(group, {})[name] = value
    keys = KeySet(master=master, host=host, system=system, functions=functions)
    shown: dict[str, str] = {}
    if created is not None:
        if keys.master == data["masterKey"]:
            shown["master key"] = keys.master
        if host.get("default") == data["functionKeys"]["default"]:
            shown["host key 'default'"] = host["default"]
        if system.get(SYSTEM_KEY) == data["systemKeys"][SYSTEM_KEY]:
            shown[f"system key '{SYSTEM_KEY}'"] = system[SYSTEM_KEY]
    return LoadedKeys(keys=keys, created=created, shown=shown)


_ENV_COVERS_FILE = {
    ("host", "master", ""),
    ("host", "function", "default"),
    ("host", "system", SYSTEM_KEY),
}
"""The keys a new keys file holds, as `_from_env` names them."""


def _create(path: Path) -> dict[str, Any] | None:
    """Write a fresh keys file unless one exists (O_EXCL: hosts starting together on one
    folder agree on the file the first one wrote); its content, or None if it existed."""
    data = {
        "masterKey": new_key(),
        "functionKeys": {"default": new_key()},
        "systemKeys": {SYSTEM_KEY: new_key()},
        "functions": {},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    except OSError as exc:
        raise KeysError(f"cannot create the keys file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    return data


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeysError(f"cannot read the keys file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise KeysError(f"the keys file {path} is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise KeysError(f"the keys file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise KeysError(f"the keys file {path} must hold a JSON object")
    return data


def _from_file(
    data: Mapping[str, Any], path: Path
) -> tuple[str, dict[str, str], dict[str, str], dict[str, dict[str, str]]]:
    master = _key(data.get("masterKey"), f"{path}: masterKey")
    host = _named(data.get("functionKeys"), f"{path}: functionKeys")
    system = _named(data.get("systemKeys"), f"{path}: systemKeys")
    raw_functions = data.get("functions") or {}
    if not isinstance(raw_functions, dict):
        raise KeysError(f"{path}: functions must be an object of function names")
    functions = {
        str(name).lower(): _named(keys, f"{path}: functions.{name}")
        for name, keys in raw_functions.items()
    }
    return master, host, system, functions


def _named(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise KeysError(f"{where} must be an object of key names and values")
    return {str(name): _key(key, f"{where}.{name}") for name, key in value.items()}


def _key(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise KeysError(f"{where} must be a non-empty string")
    if len(value) < MIN_KEY_LENGTH or not value.isprintable() or value != value.strip():
        raise KeysError(
            f"{where} must be at least {MIN_KEY_LENGTH} printable characters, without spaces "
            "around it"
        )
    return value


def _from_env(env: Mapping[str, str]) -> dict[tuple[str, str, str], str]:
    """(scope, group, name) -> key: ("host", "master", ""), ("host", "function" or "system",
    name), ("functions", function name in lower case, name)."""
    found: dict[tuple[str, str, str], str] = {}
    for variable, value in env.items():
        parts = variable.replace("__", ".").split(".")
        head = [p.lower() for p in parts[:2]]
        where = f"environment variable {variable}"
        if head == ["host", "master"] and len(parts) == 2:
            found[("host", "master", "")] = _key(value, where)
        elif head == ["host", "function"] and len(parts) == 3 and parts[2]:
            found[("host", "function", parts[2])] = _key(value, where)
        elif head == ["host", "systemkey"] and len(parts) == 3 and parts[2]:
            found[("host", "system", parts[2])] = _key(value, where)
        elif parts[0].lower() == "functions" and len(parts) == 3 and parts[1] and parts[2]:
            found[("functions", parts[1].lower(), parts[2])] = _key(value, where)
    return found
