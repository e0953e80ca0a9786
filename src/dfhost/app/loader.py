"""Loading a user's function app: function discovery and bindings, with its settings.

`load_app(path)` turns an Azure Functions Python app folder, v1 model (`<folder>/function.json`)
or v2 model (decorators in `function_app.py`), into a `FunctionApp`: the functions with their
bindings and the callables to invoke, plus the host settings (read by `dfhost.config`). Every
broken function becomes one `LoadError` line (what is wrong, how to fix it) and the others still
load; only a missing app folder raises.

Module names are the Azure Python worker's: `__app__.<folder>` for v1 functions, the file stem
(`function_app`) for v2. The SDK's custom-object envelope persists `__module__` and resolves it
through `sys.modules`, so the names must be stable across restarts and match what real Azure
wrote. Loading another app in the same process (tests do) therefore purges the previous app's
modules from `sys.modules` rather than inventing unique names.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import replace
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from azure.functions import FunctionRegister

from dfhost.app.functions import Binding, Function, FunctionApp, FunctionKind
from dfhost.config import (
    LoadError,
    LoadErrors,
    app_root,
    describe_exception,
    read_json_object,
    read_settings,
    truthy,
)

__all__ = ["load_app"]

_KIND_BY_TRIGGER: dict[str, FunctionKind] = {
    "orchestrationTrigger": "orchestrator",
    "activityTrigger": "activity",
    "entityTrigger": "entity",
    "httpTrigger": "http",
    "timerTrigger": "timer",
    "queueTrigger": "queue",
    "blobTrigger": "blob",
    "rabbitMQTrigger": "rabbitmq",
    "redisPubSubTrigger": "redis",
    "redisListTrigger": "redis",
    "redisStreamTrigger": "redis",
    "eventGridTrigger": "eventgrid",
}
# The other bindings dfhost provides, with the directions it provides them in.
_OTHER_BINDINGS: dict[str, frozenset[str]] = {
    "durableClient": frozenset({"in"}),
    "http": frozenset({"out"}),
    "queue": frozenset({"out"}),
    "blob": frozenset({"in", "out"}),
    "rabbitMQ": frozenset({"out"}),
    "redis": frozenset({"in", "out"}),
    "eventGrid": frozenset({"out"}),
}
# The host matches binding types case-insensitively; `orchestrationClient` is the legacy name of
# `durableClient` (5 of the 9 official v1 samples use it).
_CANONICAL_TYPES = {t.lower(): t for t in (*_KIND_BY_TRIGGER, *_OTHER_BINDINGS)}
_CANONICAL_TYPES["orchestrationclient"] = "durableClient"
_DIRECTIONS = {0: "in", 1: "out", 2: "inout"}  # azure.functions BindingDirection values
_APP_PACKAGE = "__app__"


def load_app(app_dir: str | Path) -> FunctionApp:
    """Load the app in `app_dir`. Problems land in `.errors`; only a missing folder raises."""
    root = app_root(app_dir)
    errors = LoadErrors()
    settings = read_settings(root, errors)
    _reset_import_state(root)

    script_name = os.environ.get("PYTHON_SCRIPT_FILE_NAME") or "function_app.py"
    v1_dirs = sorted(p.parent for p in root.glob("*/function.json") if p.is_file())
    if (root / script_name).is_file():
        loaded = _load_v2(root / script_name, errors)
        if v1_dirs:
            names = ", ".join(d.name for d in v1_dirs)
            errors.add(
                root,
                f"{script_name} makes this a v2 app, so Azure ignores the "
                f"function.json folders ({names}); so does dfhost",
            )
    else:
        loaded = [f for d in v1_dirs if (f := _guard(d, errors, _load_v1, d, errors))]
        if not v1_dirs:
            errors.add(
                root,
                f"no functions: expected {script_name} (v2 model) or sub-folders "
                "with a function.json (v1 model)",
            )

    functions: dict[str, Function] = {}
    for f in loaded:
        if _is_disabled_by_env(f.name):
            continue
        if f.name in functions:
            errors.add(f.source, f"function name {f.name!r} is used twice; the first one wins")
        else:
            functions[f.name] = f
    return FunctionApp(root, _resolve_aliases(functions, errors), settings, list(errors))


# --------------------------------------------------------------------------------------------
# v1 model: <folder>/function.json


def _load_v1(folder: Path, errors: LoadErrors) -> Function | None:
    name, src = folder.name, folder / "function.json"
    meta = read_json_object(src, errors)
    if meta is None or truthy(meta.get("disabled")) or _is_disabled_by_env(name):
        return None
    raw_bindings = meta.get("bindings")
    if not isinstance(raw_bindings, list) or not raw_bindings:
        errors.add(src, f'function {name!r} has no "bindings"; add at least its trigger')
        return None
    bindings: list[Binding] = []
    for i, raw in enumerate(raw_bindings, 1):
        if not (
            isinstance(raw, dict)
            and isinstance(raw.get("type"), str)
            and isinstance(raw.get("name"), str)
        ):
            errors.add(src, f'function {name!r}: binding #{i} needs a string "type" and "name"')
            return None
        settings = {k: v for k, v in raw.items() if k not in ("type", "name", "direction")}
        if raw["type"].lower() == "httptrigger":
            # The host's defaults, so v1 looks like v2 (where the SDK fills them in).
            settings = {"authLevel": "function", "route": name, **settings}
        bindings.append(_binding(raw["type"], raw["name"], raw.get("direction"), settings))
    triggers = [b for b in bindings if b.type.lower().endswith("trigger")]
    if len(triggers) != 1:
        found = f"{len(triggers)} triggers" if triggers else "no trigger"
        errors.add(src, f"function {name!r} has {found}; a function needs exactly one")
        return None
    trigger = triggers[0]
    kind = _KIND_BY_TRIGGER.get(trigger.type, "other")
    problem = _unsupported(src, name, trigger, bindings)
    if problem is not None:
        # Listed but not imported: dfhost never invokes it, and its module may need packages
        # or connections that only that binding uses.
        errors.append(problem)
        return Function(
            name, "other", trigger, tuple(bindings), _not_runnable(problem.message), str(src)
        )
    script = (folder / str(meta.get("scriptFile") or "__init__.py")).resolve()
    entry_point = str(meta.get("entryPoint") or "main")
    handler = _import_entry_point(name, folder.parent, script, entry_point, errors)
    if handler is None:
        return None
    return _make_function(name, kind, trigger, bindings, handler, str(script), errors, v2=False)


def _import_entry_point(
    name: str, root: Path, script: Path, entry_point: str, errors: LoadErrors
) -> Callable[..., Any] | None:
    if not script.is_file() or script.suffix != ".py" or not script.is_relative_to(root):
        errors.add(script, f'function {name!r}: "scriptFile" must be a .py file in the app folder')
        return None
    # The worker's module name: __app__.<folder>, plus .<stem> unless the script is __init__.py.
    parts = [_APP_PACKAGE, *script.relative_to(root).parent.parts]
    if script.stem != "__init__":
        parts.append(script.stem)
    try:
        module = importlib.import_module(".".join(parts))
    except (Exception, SystemExit) as e:
        errors.append(_import_failed(script, f"function {name!r}", e, root))
        return None
    handler = getattr(module, entry_point, None)
    if handler is None:
        message = f'no entry point {entry_point!r}; define it or set "entryPoint" in function.json'
        errors.add(script, f"function {name!r}: {message}")
        return None
    if not callable(handler):
        errors.add(script, f"function {name!r}: entry point {entry_point!r} is not callable")
        return None
    return cast(Callable[..., Any], handler)


# --------------------------------------------------------------------------------------------
# v2 model: decorators in function_app.py


def _load_v2(script: Path, errors: LoadErrors) -> list[Function]:
    spec = importlib.util.spec_from_file_location(script.stem, script)
    if spec is None or spec.loader is None:
        errors.add(script, "cannot be imported as a Python module")
        return []
    module = importlib.util.module_from_spec(spec)
    sys.modules[script.stem] = module  # before exec, as a normal import does
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        del sys.modules[script.stem]
        errors.append(_import_failed(script, script.name, e, script.parent))
        return []
    apps = {id(v): v for v in vars(module).values() if isinstance(v, FunctionRegister)}
    if not apps:
        errors.add(
            script,
            "defines no module-level app: add `app = df.DFApp()` (or "
            "func.FunctionApp()) and decorate the functions with it",
        )
    elif len(apps) > 1:
        errors.add(
            script, f"defines {len(apps)} apps but Azure accepts one: use blueprints instead"
        )
    result: list[Function] = []
    for app in apps.values():
        try:
            # Also validates: unique names, one trigger each; fills HTTP route/authLevel defaults.
            # Call it once per app object: a second call reports every name as a duplicate.
            sdk_functions = app.get_functions()
        except Exception as e:
            errors.add(
                script,
                f"indexing failed, so no function loads (as in Azure): {describe_exception(e)}",
            )
            continue
        for sdk_fn in sdk_functions:
            if fn := _guard(script, errors, _from_v2, sdk_fn, script, errors):
                result.append(fn)
    return result


def _from_v2(sdk_fn: Any, script: Path, errors: LoadErrors) -> Function | None:
    name = str(sdk_fn.get_function_name())
    handler = sdk_fn.get_user_function()
    src = _source_file(handler) or str(script)  # blueprints live in other files
    sdk_trigger, sdk_bindings = sdk_fn.get_trigger(), list(sdk_fn.get_bindings())
    bindings = [_v2_binding(b) for b in sdk_bindings]
    trigger = bindings[next(i for i, b in enumerate(sdk_bindings) if b is sdk_trigger)]
    kind = _KIND_BY_TRIGGER.get(trigger.type, "other")
    problem = _unsupported(src, name, trigger, bindings)
    if problem is not None:
        errors.append(problem)
        return Function(
            name, "other", trigger, tuple(bindings), _not_runnable(problem.message), src
        )
    return _make_function(name, kind, trigger, bindings, handler, src, errors, v2=True)


def _v2_binding(b: Any) -> Binding:
    settings = {
        k: _plain(v) for k, v in b.get_dict_repr().items() if k not in ("type", "name", "direction")
    }
    return _binding(str(b.type), str(b.name), _DIRECTIONS.get(int(b.direction), "in"), settings)


def _plain(value: Any) -> Any:
    """SDK enums -> the strings function.json would hold ("anonymous", "POST", "string")."""
    if isinstance(value, Enum):
        return value.value if isinstance(value.value, str) else value.name.lower()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# Shared by both models


def _binding(type_: str, name: str, direction: Any, settings: dict[str, Any]) -> Binding:
    direction_text = str(direction).lower() if direction is not None else "in"
    canonical = _CANONICAL_TYPES.get(type_.lower(), type_)
    return Binding(canonical, name, direction_text, MappingProxyType(settings))


def _make_function(
    name: str,
    kind: FunctionKind,
    trigger: Binding,
    bindings: list[Binding],
    handler: Callable[..., Any],
    src: str,
    errors: LoadErrors,
    *,
    v2: bool,
) -> Function | None:
    # Aliases: the names the extension registers (the binding's orchestration/activity/
    # entityName) and, for v2, the def name that call_activity(fn)/call_sub_orchestrator(fn)
    # send whatever activity= or @app.function_name say (sdk-protocol.md §7.2).
    setting = {"orchestrator": "orchestration", "activity": "activity", "entity": "entityName"}
    aliases = [str(trigger.settings.get(setting.get(kind, ""), "") or "")]
    if kind in ("orchestrator", "entity"):
        attr = "orchestrator_function" if kind == "orchestrator" else "entity_function"
        sdk_class = "Orchestrator" if kind == "orchestrator" else "Entity"
        user_fn = getattr(handler, attr, None)
        if user_fn is None:
            errors.add(
                src,
                f"{kind} {name!r}: entry point must be created with "
                f"df.{sdk_class}.create(...), e.g. main = df.{sdk_class}.create(fn)",
            )
            return None
        if v2 and kind == "orchestrator":
            aliases.append(getattr(user_fn, "__name__", ""))
    else:
        if v2 and kind == "activity":
            aliases.append(getattr(handler, "__name__", ""))
        if problem := _parameter_mismatch(handler, bindings):
            errors.add(src, f"function {name!r}: {problem}")
            return None
    if kind == "timer" and not trigger.settings.get("schedule"):
        errors.add(src, f'timer {name!r} has no "schedule" (an NCRONTAB expression)')
        return None
    unique = tuple(dict.fromkeys(a for a in aliases if a and a != name))
    return Function(name, kind, trigger, tuple(bindings), handler, src, unique)


def _parameter_mismatch(handler: Callable[..., Any], bindings: Iterable[Binding]) -> str | None:
    """The Azure worker refuses a function whose parameters and binding names differ, because
    it passes every binding as a keyword argument. (`context` is the optional func.Context.)"""
    try:
        params = set(inspect.signature(handler).parameters)
    except (TypeError, ValueError):
        return None
    bound = {b.name for b in bindings} - {"$return"}
    extra, missing = sorted(params - bound - {"context"}), sorted(bound - params)
    if not (extra or missing):
        return None
    return (
        f"the parameters {extra} have no binding and the bindings {missing} no parameter; "
        "binding names and parameter names must match"
    )


def _resolve_aliases(functions: dict[str, Function], errors: LoadErrors) -> dict[str, Function]:
    """Give every (kind, name) one owner: function names first, then aliases in load order."""
    owners: dict[tuple[str, str], str] = {}

    def key(f: Function, n: str) -> tuple[str, str]:
        return (f.kind, n.lower() if f.kind == "entity" else n)

    for f in functions.values():
        if (owner := owners.setdefault(key(f, f.name), f.name)) != f.name:
            errors.add(f.source, f"entity names {owner!r} and {f.name!r} differ only in case")
    result = dict(functions)
    for f in functions.values():
        kept = []
        for alias in f.aliases:
            if (owner := owners.setdefault(key(f, alias), f.name)) == f.name:
                kept.append(alias)
            else:
                clash = f"{f.kind} {f.name!r} also answers to {alias!r}, as {owner!r} does"
                errors.add(f.source, f"{clash}; {owner!r} wins, rename one")
        if tuple(kept) != f.aliases:
            result[f.name] = replace(f, aliases=tuple(kept))
    return result


def _guard(
    src: str | Path, errors: LoadErrors, load: Callable[..., Function | None], *args: Any
) -> Function | None:
    """Run one function's loader; whatever it raises becomes that function's LoadError."""
    try:
        return load(*args)
    except Exception as e:  # a very odd app, or a dfhost bug: report it and load the rest
        errors.add(src, f"could not be loaded: {describe_exception(e)}")
        return None


def _unsupported(
    src: str | Path, name: str, trigger: Binding, bindings: Iterable[Binding]
) -> LoadError | None:
    """Why dfhost cannot run this function (one line), or None: its trigger or one of its
    other bindings is of a type (or direction) dfhost does not provide."""
    if trigger.type not in _KIND_BY_TRIGGER:
        runs = ", ".join(_KIND_BY_TRIGGER)
        message = f"function {name!r}: dfhost runs only {runs}, not {trigger.type}"
        return LoadError(str(src), f"{message}; listed, never run")
    for b in bindings:
        if b is trigger or b.direction in _OTHER_BINDINGS.get(b.type, ()):
            continue
        provided = ", ".join(f"{t} ({'/'.join(sorted(d))})" for t, d in _OTHER_BINDINGS.items())
        message = (
            f"function {name!r}: binding {b.name!r} of type {b.type} ({b.direction}) is not "
            f"supported; dfhost provides {provided}; listed, never run"
        )
        return LoadError(str(src), message)
    return None


def _not_runnable(reason: str) -> Callable[..., Any]:
    def handler(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"dfhost does not run this function: {reason}")

    return handler


def _import_failed(src: Path, what: str, e: BaseException, app_root: Path) -> LoadError:
    hint = "; install it (requirements.txt) or fix the import" if isinstance(e, ImportError) else ""
    message = f"{what}: import failed with {describe_exception(e)}{hint}"
    return LoadError(str(src), message, _user_traceback(e, app_root))


def _user_traceback(e: BaseException, app_root: Path) -> str:
    """`e` as Python prints it, from the first frame in the app's own files: the import
    machinery and dfhost's loader above it are noise to the app's author."""
    tb = e.__traceback__
    while tb is not None and not Path(tb.tb_frame.f_code.co_filename).is_relative_to(app_root):
        tb = tb.tb_next
    # A SyntaxError has no frame of the user's: its own text names the file, line and caret.
    return "".join(traceback.format_exception(type(e), e, tb)).rstrip()


def _source_file(handler: Callable[..., Any]) -> str | None:
    user = handler
    for attr in ("orchestrator_function", "entity_function", "client_function"):
        user = getattr(handler, attr, None) or user
    try:
        return inspect.getsourcefile(user)
    except TypeError:
        return None


def _is_disabled_by_env(name: str) -> bool:
    # App setting AzureWebJobs.<name>.Disabled; Azure app setting names are case-insensitive.
    wanted = f"azurewebjobs.{name}.disabled".lower()
    return any(k.lower() == wanted and truthy(v) for k, v in os.environ.items())


# --------------------------------------------------------------------------------------------
# Import state

_previous_roots: list[Path] = []
_baseline_modules: set[str] = set()  # what was imported before the first app


def _reset_import_state(root: Path) -> None:
    """Forget the previous app's modules and put `root` first on sys.path."""
    if not _baseline_modules:
        _baseline_modules.update(sys.modules)
    roots = [*_previous_roots, root]
    for mod_name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        # Only modules the app brought in: never the baseline, nor installed packages (an app
        # folder may hold its own virtualenv).
        from_app = (
            mod_name not in _baseline_modules
            and not {"site-packages", "dist-packages"} & set(Path(file).parts)
            and any(Path(file).is_relative_to(r) for r in roots)
        )
        if from_app or mod_name == _APP_PACKAGE or mod_name.startswith(_APP_PACKAGE + "."):
            del sys.modules[mod_name]
    for old in _previous_roots:
        while str(old) in sys.path:
            sys.path.remove(str(old))
    _previous_roots[:] = [root]
    sys.path.insert(0, str(root))  # the seed app does `from display_time import display_time`
    importlib.invalidate_caches()
    # The package v1 functions are imported under, so `from ..shared_code import x` works. It has
    # no __init__.py: its search path is the app root, and folder names may contain hyphens.
    spec = importlib.machinery.ModuleSpec(_APP_PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(root)]
    sys.modules[_APP_PACKAGE] = importlib.util.module_from_spec(spec)
