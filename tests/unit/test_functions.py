"""Unit tests for dfhost.app.loader: app loading, bindings, settings."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from dfhost.app.functions import Binding, Function, FunctionApp
from dfhost.app.loader import load_app
from dfhost.config import AppLoadError, AppNotFoundError, LoadError, expand_app_settings

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "apps"
EXAMPLES = REPO / "examples"
EXAMPLE_APP = EXAMPLES / "eternal_timer"


@pytest.fixture(autouse=True)
def isolated_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """load_app writes local.settings.json Values into os.environ and puts the app on sys.path;
    undo both so tests cannot see each other's settings."""
    for key in list(os.environ):
        if key.lower().startswith(("azurefunctionsjobhost__", "azurewebjobs.")) or key in (
            "PYTHON_SCRIPT_FILE_NAME",
            "WEBSITE_SITE_NAME",
        ):
            monkeypatch.delenv(key)
    saved_env, saved_path = dict(os.environ), list(sys.path)
    yield
    os.environ.clear()
    os.environ.update(saved_env)
    sys.path[:] = saved_path


def write_app(root: Path, files: Mapping[str, str | Mapping[str, Any]]) -> Path:
    """Create an app folder: dict values are written as JSON, strings dedented."""
    files = {"host.json": {"version": "2.0"}, **files}
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(content) if isinstance(content, str) else json.dumps(content)
        path.write_text(text, encoding="utf-8")
    return root


def activity_json(binding: str = "name", **extra: object) -> dict[str, object]:
    return {"bindings": [{"name": binding, "type": "activityTrigger", "direction": "in"}], **extra}


def messages(app: FunctionApp) -> str:
    return "\n".join(f"{e.source}: {e.message}" for e in app.errors)


# --- the example app of the article's scenario ------------------------------------------------


def test_the_example_app_loads_its_three_functions() -> None:
    app = load_app(EXAMPLE_APP)

    assert app.errors == []
    assert app.root == EXAMPLE_APP.resolve()
    assert {n: f.kind for n, f in app.functions.items()} == {
        "durable-activity": "activity",
        "durable-client": "http",
        "durable-orchestrator": "orchestrator",
    }
    client = app.functions["durable-client"]
    assert client.trigger == client.bindings[0]
    assert client.trigger.settings["route"] == "orchestrators/{functionName}"
    assert client.trigger.settings["methods"] == ["post"]
    assert client.trigger.settings["authLevel"] == "function"
    by_name = {b.name: b for b in client.bindings}
    assert by_name["$return"] == Binding("http", "$return", "out", {})
    assert by_name["starter"].type == "durableClient"
    assert by_name["starter"].direction == "in"
    assert client.is_async
    assert client.parameter_names() == {"req", "starter"}
    assert client.source.endswith("durable-client/__init__.py")

    orchestrator = app.orchestrator("durable-orchestrator")
    assert orchestrator is not None
    assert orchestrator.orchestrator_function.__name__ == "orchestrator_function"
    assert not orchestrator.is_async
    assert orchestrator.aliases == ()
    # The activity imports `shared_code.clock` from the app root; it sleeps, so it is not called.
    activity = app.activity("durable-activity")
    assert activity is not None
    assert activity.trigger.name == "name"
    assert activity.parameter_names() == {"name"}
    assert activity.handler.__module__ == "__app__.durable-activity"
    assert activity.handler.__globals__["clock"].local_time()
    assert app.settings.hub_name == "EternalTimer"
    assert app.settings.route_prefix == "api"
    assert os.environ["WORK_SECONDS"] == "5"  # local.settings.json's Values


# --- v1_broken ---------------------------------------------------------------------------------


def test_v1_broken_loads_the_good_function_and_reports_each_broken_one() -> None:
    app = load_app(APPS / "v1_broken")

    runnable = {n for n, f in app.functions.items() if f.kind != "other"}
    assert runnable == {"Good"}
    good = app.activity("Good")
    assert good is not None
    assert good.handler(name="x") == "good x"  # through `from ..shared_code.greeting import`

    errors = {Path(e.source).parent.name: e for e in app.errors}
    assert len(app.errors) == 4, messages(app)
    assert set(errors) == {"BadJson", "BadImport", "NoEntry", "QueueFn"}
    assert "not valid JSON" in errors["BadJson"].message
    assert "line 7" in errors["BadJson"].message
    assert errors["BadJson"].source.endswith("function.json")
    assert "ModuleNotFoundError" in errors["BadImport"].message
    assert "dfhost_no_such_package" in errors["BadImport"].message
    assert errors["BadImport"].source.endswith("__init__.py")
    assert "no entry point 'main'" in errors["NoEntry"].message
    assert errors["NoEntry"].source.endswith("NoEntry/__init__.py")
    assert "serviceBusTrigger" in errors["QueueFn"].message
    for error in app.errors:
        assert "\n" not in error.message
        assert "Traceback" not in error.message

    queue = app.functions["QueueFn"]  # listed, never imported (its module raises at import)
    assert queue.kind == "other"
    assert queue.trigger.settings["queueName"] == "work-items"
    with pytest.raises(RuntimeError, match="does not run"):
        queue.handler(msg="x")


# --- v2_basic ----------------------------------------------------------------------------------


@pytest.fixture
def v2_app() -> FunctionApp:
    return load_app(APPS / "v2_basic")


def test_v2_basic_loads_app_and_blueprint_functions(v2_app: FunctionApp) -> None:
    assert v2_app.errors == []
    assert {n: f.kind for n, f in v2_app.functions.items()} == {
        "http_start": "http",
        "hello_orchestrator": "orchestrator",
        "SayHelloFn": "activity",
        "cleanup_timer": "timer",
        "counter": "entity",
        "count_twice": "orchestrator",
        "shout": "activity",
    }
    assert v2_app.functions["counter"].source.endswith("durable_blueprints.py")
    assert v2_app.functions["SayHelloFn"].source.endswith("function_app.py")
    assert [f.name for f in v2_app.of_kind("orchestrator")] == ["hello_orchestrator", "count_twice"]
    assert v2_app.settings.local_http_port == 7072
    assert v2_app.settings.hub_name == "V2BasicHub"
    assert v2_app.settings.max_concurrent_activities == 4


def test_v2_aliases_resolve_def_names_and_binding_names(v2_app: FunctionApp) -> None:
    say_hello = v2_app.activity("SayHelloFn")
    assert say_hello is not None
    assert say_hello.aliases == ("say_hello",)
    assert v2_app.activity("say_hello") is say_hello  # what call_activity(say_hello) sends
    # Case-insensitive, as the extension compares function names (FunctionName).
    assert v2_app.activity("sayhellofn") is say_hello
    assert say_hello.handler(city="Tokyo") == "Hello Tokyo!"
    assert not say_hello.is_async

    count_twice = v2_app.orchestrator("CountTwice")
    assert count_twice is v2_app.orchestrator("count_twice")
    assert count_twice is not None
    assert count_twice.aliases == ("CountTwice",)
    assert count_twice.trigger.settings == {"orchestration": "CountTwice"}
    assert v2_app.activity("count_twice") is None  # lookups are per kind

    shout = v2_app.activity("shout")
    assert shout is not None
    assert shout.is_async
    assert asyncio.run(shout.handler(text="hi")) == "HI!"


def test_v2_entity_lookup_is_case_insensitive(v2_app: FunctionApp) -> None:
    counter = v2_app.functions["counter"]
    assert counter.aliases == ("Counter",)
    for name in ("counter", "Counter", "COUNTER"):
        assert v2_app.entity(name) is counter
    assert callable(getattr(counter.handler, "entity_function", None))


def test_v2_http_and_client_bindings(v2_app: FunctionApp) -> None:
    start = v2_app.functions["http_start"]
    assert start.trigger == Binding(
        "httpTrigger",
        "req",
        "in",
        {"methods": ["POST"], "authLevel": "anonymous", "route": "orchestrators/{functionName}"},
    )
    assert {b.name: (b.type, b.direction) for b in start.bindings} == {
        "client": ("durableClient", "in"),
        "req": ("httpTrigger", "in"),
        "$return": ("http", "out"),
    }
    # The SDK's wrapper: call it with keyword args; its signature is the user's.
    assert start.parameter_names() == {"req", "client"}
    assert start.is_async


def test_v2_timer_settings(v2_app: FunctionApp) -> None:
    timer = v2_app.functions["cleanup_timer"]
    assert timer.trigger.type == "timerTrigger"
    assert timer.trigger.name == "timer"
    assert timer.trigger.settings == {"schedule": "0 */5 * * * *", "runOnStartup": False}


def test_v2_orchestrator_handler_is_the_sdk_handle(v2_app: FunctionApp) -> None:
    orchestrator = v2_app.orchestrator("hello_orchestrator")
    assert orchestrator is not None
    assert orchestrator.orchestrator_function.__name__ == "hello_orchestrator"
    assert orchestrator.parameter_names() == {"context"}
    assert orchestrator.aliases == ()


# --- v1 details --------------------------------------------------------------------------------


def test_v1_failure_modes_each_give_one_error(tmp_path: Path) -> None:
    app = load_app(
        write_app(
            tmp_path,
            {
                "Ok/function.json": activity_json(),
                "Ok/__init__.py": "def main(name):\n    return name\n",
                "NoBindings/function.json": {"bindings": []},
                "NoTrigger/function.json": {
                    "bindings": [{"name": "x", "type": "http", "direction": "out"}]
                },
                "NotCallable/function.json": activity_json(),
                "NotCallable/__init__.py": "main = 42\n",
                "Syntax/function.json": activity_json(),
                "Syntax/__init__.py": "def main(name) return name\n",
                "Raises/function.json": activity_json(),
                "Raises/__init__.py": "raise RuntimeError('boom at import')\n",
                "PlainOrch/function.json": {
                    "bindings": [{"name": "context", "type": "orchestrationTrigger"}]
                },
                "PlainOrch/__init__.py": "def main(context):\n    return None\n",
                "Mismatch/function.json": activity_json("city"),
                "Mismatch/__init__.py": "def main(name):\n    return name\n",
                "NoSchedule/function.json": {
                    "bindings": [{"name": "t", "type": "timerTrigger", "direction": "in"}]
                },
                "NoSchedule/__init__.py": "def main(t):\n    pass\n",
            },
        )
    )
    assert list(app.functions) == ["Ok"]
    by_folder = {Path(e.source).parent.name: e.message for e in app.errors}
    assert len(app.errors) == len(by_folder) == 8, messages(app)
    assert 'no "bindings"' in by_folder["NoBindings"]
    assert "no trigger" in by_folder["NoTrigger"]
    assert "not callable" in by_folder["NotCallable"]
    assert "SyntaxError" in by_folder["Syntax"]
    assert "RuntimeError: boom at import" in by_folder["Raises"]
    assert "df.Orchestrator.create(...)" in by_folder["PlainOrch"]
    assert "['city']" in by_folder["Mismatch"] and "['name']" in by_folder["Mismatch"]
    assert "schedule" in by_folder["NoSchedule"]


def test_v1_script_file_entry_point_and_binding_normalisation(tmp_path: Path) -> None:
    app = load_app(
        write_app(
            tmp_path,
            {
                "Start/function.json": {
                    "scriptFile": "starter.py",
                    "entryPoint": "run",
                    "bindings": [
                        {"name": "req", "type": "HttpTrigger", "direction": "IN"},
                        {"name": "$return", "type": "http", "direction": "out"},
                        {"name": "starter", "type": "orchestrationClient", "direction": "in"},
                    ],
                },
                "Start/starter.py": """\
                    from .helper import VALUE

                    async def run(req, starter):
                        return VALUE
                """,
                "Start/helper.py": "VALUE = 'from helper'\n",
                "Orch/function.json": {
                    "bindings": [
                        {"name": "context", "type": "orchestrationTrigger", "orchestration": "O2"}
                    ]
                },
                "Orch/__init__.py": """\
                    import azure.durable_functions as df

                    def gen(context):
                        yield context.call_activity("Act", 1)

                    main = df.Orchestrator.create(gen)
                """,
            },
        )
    )
    assert app.errors == [], messages(app)
    start = app.functions["Start"]
    assert start.handler.__module__ == "__app__.Start.starter"
    assert asyncio.run(start.handler(req=None, starter="{}")) == "from helper"
    assert start.trigger == Binding(
        "httpTrigger", "req", "in", {"authLevel": "function", "route": "Start"}
    )
    assert start.bindings[2] == Binding("durableClient", "starter", "in", {})
    orch = app.orchestrator("O2")
    assert orch is app.orchestrator("Orch")
    assert orch is not None and orch.aliases == ("O2",)
    assert app.orchestrator("gen") is None  # def names are aliases only in the v2 model


def test_disabled_functions_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AzureWebJobs.ByEnv.Disabled", "true")
    app = load_app(
        write_app(
            tmp_path,
            {
                "ByJson/function.json": activity_json(disabled=True),
                "ByJson/__init__.py": "raise RuntimeError('must not be imported')\n",
                "ByEnv/function.json": activity_json(),
                "ByEnv/__init__.py": "raise RuntimeError('must not be imported')\n",
                "Kept/function.json": activity_json(),
                "Kept/__init__.py": "def main(name):\n    return name\n",
            },
        )
    )
    assert app.errors == [], messages(app)
    assert list(app.functions) == ["Kept"]


def test_alias_clash_reports_and_first_wins(tmp_path: Path) -> None:
    files: dict[str, str | dict[str, object]] = {}
    for folder in ("A1", "A2"):
        files[f"{folder}/function.json"] = {
            "bindings": [{"name": "x", "type": "activityTrigger", "activity": "Shared"}]
        }
        files[f"{folder}/__init__.py"] = f"def main(x):\n    return {folder!r}\n"
    app = load_app(write_app(tmp_path, files))

    assert len(app.errors) == 1 and "'Shared'" in app.errors[0].message, messages(app)
    shared = app.activity("Shared")
    assert shared is not None and shared.name == "A1"
    assert app.functions["A2"].aliases == ()


def test_loading_another_app_replaces_the_previous_modules(tmp_path: Path) -> None:
    # Same folder name and same v2 module name as the test apps: the old modules must not leak.
    first = load_app(APPS / "v1_broken")
    assert first.functions["Good"].handler(name="a") == "good a"
    second = load_app(
        write_app(
            tmp_path / "other",
            {
                "Good/function.json": activity_json(),
                "Good/__init__.py": "def main(name):\n    return 'other ' + name\n",
            },
        )
    )
    assert second.functions["Good"].handler(name="a") == "other a"
    assert str(APPS / "v1_broken") not in sys.path

    v2 = load_app(APPS / "v2_basic")
    other_v2 = load_app(
        write_app(
            tmp_path / "v2",
            {
                "function_app.py": """\
                    import azure.durable_functions as df

                    app = df.DFApp()

                    @app.activity_trigger(input_name="x")
                    def only_one(x):
                        return x
                """,
            },
        )
    )
    assert "SayHelloFn" in v2.functions
    assert list(other_v2.functions) == ["only_one"], messages(other_v2)


def test_v2_indexing_errors_are_reported(tmp_path: Path) -> None:
    duplicate = load_app(
        write_app(
            tmp_path / "dup",
            {
                "function_app.py": """\
                    import azure.durable_functions as df

                    app = df.DFApp()

                    @app.function_name("same")
                    @app.activity_trigger(input_name="x")
                    def one(x):
                        return x

                    @app.function_name("same")
                    @app.activity_trigger(input_name="x")
                    def two(x):
                        return x
                """,
            },
        )
    )
    assert duplicate.functions == {}
    assert len(duplicate.errors) == 1
    assert "unique" in duplicate.errors[0].message

    no_app = load_app(write_app(tmp_path / "none", {"function_app.py": "X = 1\n"}))
    assert [e.message for e in no_app.errors] == [
        "defines no module-level app: add `app = df.DFApp()` (or func.FunctionApp()) and "
        "decorate the functions with it"
    ]


def test_v2_script_file_name_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHON_SCRIPT_FILE_NAME", "my_app.py")
    app = load_app(
        write_app(
            tmp_path,
            {
                "my_app.py": """\
                    import azure.functions as func

                    app = func.FunctionApp()

                    @app.route(route="ping")
                    def ping(req: func.HttpRequest) -> func.HttpResponse:
                        return func.HttpResponse("pong")
                """,
            },
        )
    )
    assert app.errors == [], messages(app)
    ping = app.functions["ping"]
    assert ping.kind == "http"
    assert ping.trigger.settings == {"authLevel": "function", "route": "ping"}


# --- settings ----------------------------------------------------------------------------------


def test_local_settings_values_do_not_override_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DFHOST_TEST_SET", "from-env")
    monkeypatch.delenv("DFHOST_TEST_NEW", raising=False)
    root = write_app(
        tmp_path,
        {
            "local.settings.json": {
                "IsEncrypted": False,
                "Values": {"DFHOST_TEST_SET": "from-file", "DFHOST_TEST_NEW": "x", "N": 3},
                "Host": {"LocalHttpPort": 7100},
            }
        },
    )
    app = load_app(root)
    assert os.environ["DFHOST_TEST_SET"] == "from-env"
    assert os.environ["DFHOST_TEST_NEW"] == "x"
    assert os.environ["N"] == "3"
    assert app.settings.local_http_port == 7100
    assert [e.message for e in app.errors] == [
        "no functions: expected function_app.py (v2 model) or sub-folders with a function.json "
        "(v1 model)"
    ]


def test_encrypted_and_malformed_local_settings(tmp_path: Path) -> None:
    encrypted = load_app(
        write_app(
            tmp_path / "enc",
            {"local.settings.json": {"IsEncrypted": True, "Values": {"DFHOST_TEST_ENC": "x"}}},
        )
    )
    assert "DFHOST_TEST_ENC" not in os.environ
    assert any("IsEncrypted" in e.message for e in encrypted.errors)

    malformed = load_app(
        write_app(tmp_path / "bad", {"local.settings.json": '{\n  "Values": {"A" "b"}\n}'})
    )
    error = malformed.errors[0]
    assert error.source.endswith("local.settings.json")
    assert "line 2, column 18" in error.message

    bad_name = load_app(
        write_app(tmp_path / "name", {"local.settings.json": {"Values": {"A=B": "x"}}})
    )
    assert "cannot set 'A=B'" in bad_name.errors[0].message


def test_v2_app_with_function_json_folders_and_two_apps(tmp_path: Path) -> None:
    app = load_app(
        write_app(
            tmp_path,
            {
                "function_app.py": """\
                    import azure.functions as func

                    one = func.FunctionApp()
                    two = func.FunctionApp()

                    @one.route(route="a")
                    def a(req):
                        return "a"

                    @two.route(route="b")
                    def b(req):
                        return "b"
                """,
                "Old/function.json": activity_json(),
            },
        )
    )
    assert sorted(app.functions) == ["a", "b"]
    assert len(app.errors) == 2, messages(app)
    assert "ignores the function.json folders (Old)" in messages(app)
    assert "defines 2 apps" in messages(app)


def test_host_json_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DFHOST_TEST_HUB", "FromSetting")
    host = {
        "version": "2.0",
        "extensions": {
            "durableTask": {
                "hubName": "%DFHOST_TEST_HUB%",
                "maxConcurrentActivityFunctions": 3,
                "maxConcurrentOrchestratorFunctions": "7",
                "defaultVersion": "1.0",
            },
            "http": {"routePrefix": ""},
        },
    }
    settings = load_app(write_app(tmp_path, {"host.json": host})).settings
    assert settings.hub_name == "FromSetting"
    assert settings.max_concurrent_activities == 3
    assert settings.max_concurrent_orchestrators == 7
    assert settings.default_version == "1.0"
    assert settings.route_prefix == ""
    assert settings.local_http_port is None
    assert settings.host_json["extensions"]["http"] == {"routePrefix": ""}


def test_host_json_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AzureFunctionsJobHost__extensions__durableTask__hubName", "EnvHub")
    monkeypatch.setenv("AzureFunctionsJobHost__extensions__http__routePrefix", "fn")
    host = {"version": "2.0", "extensions": {"durableTask": {"HubName": "FileHub"}}}
    settings = load_app(write_app(tmp_path, {"host.json": host})).settings
    assert settings.hub_name == "EnvHub"
    assert settings.route_prefix == "fn"


def test_host_json_defaults_and_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bare = load_app(write_app(tmp_path / "bare", {})).settings
    assert bare.hub_name == "TestHubName"
    assert bare.route_prefix == "api"
    assert bare.max_concurrent_activities == 10 * (os.cpu_count() or 1)
    assert bare.default_version is None

    monkeypatch.setenv("WEBSITE_SITE_NAME", "my-func-app")
    assert load_app(write_app(tmp_path / "site", {})).settings.hub_name == "myfuncapp"
    monkeypatch.delenv("WEBSITE_SITE_NAME")

    bad_hub = {"version": "2.0", "extensions": {"durableTask": {"hubName": "my_hub!"}}}
    app = load_app(write_app(tmp_path / "badhub", {"host.json": bad_hub}))
    assert app.settings.hub_name == "myhub"
    assert "invalid" in app.errors[0].message

    app = load_app(write_app(tmp_path / "malformed", {"host.json": '{"version": "2.0",,}'}))
    assert app.settings.hub_name == "TestHubName"
    assert app.errors[0].source.endswith("host.json")
    assert "not valid JSON" in app.errors[0].message


def test_json_comments_and_trailing_commas_are_accepted(tmp_path: Path) -> None:
    host = """\
        {
          // comments are fine for the .NET host
          "version": "2.0", /* and so are */
          "extensions": {"durableTask": {"hubName": "Commented//Not"},},
        }
    """
    app = load_app(write_app(tmp_path, {"host.json": host}))
    assert app.settings.hub_name == "CommentedNot"  # the // inside the string survived
    assert app.errors[0].message.startswith("hubName 'Commented//Not' is invalid")


def test_expand_app_settings() -> None:
    assert expand_app_settings("%A%-%B%", {"A": "1", "B": "2"}) == "1-2"
    with pytest.raises(KeyError, match="C"):
        expand_app_settings("%C%", {})


def test_missing_app_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(AppNotFoundError, match="does not exist") as info:
        load_app(tmp_path / "nope")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, AppLoadError)


# --- the public dataclasses --------------------------------------------------------------------


def test_function_introspection_follows_wrapped() -> None:
    import functools

    async def user(req: object, client: str) -> None:
        return None

    @functools.wraps(user)
    def wrapper(*args: Any, **kwargs: Any) -> object:
        return user(*args, **kwargs)

    trigger = Binding("httpTrigger", "req", "in")
    fn = Function("f", "http", trigger, (trigger,), wrapper, "x.py")
    assert fn.parameter_names() == {"req", "client"}
    assert fn.is_async
    assert fn.aliases == ()
    assert LoadError("a", "b") == LoadError("a", "b")


# --- examples ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["eternal_cleanup", "hello_cities"])
def test_examples_load_without_errors(name: str) -> None:
    app = load_app(EXAMPLES / name)
    assert app.errors == [], messages(app)
    if name == "eternal_cleanup":
        assert {n: f.kind for n, f in app.functions.items()} == {
            "Cleanup": "activity",
            "CleanupLoop": "orchestrator",
            "StartCleanup": "http",
        }
        assert app.settings.hub_name == "EternalCleanup"
        assert app.functions["StartCleanup"].trigger.settings["route"] == "cleanup/start"
    else:
        assert {n: f.kind for n, f in app.functions.items()} == {
            "http_start": "http",
            "hello_cities": "orchestrator",
            "hello_fanout": "orchestrator",
            "say_hello": "activity",
        }
        say_hello = app.activity("say_hello")
        assert say_hello is not None and say_hello.handler(city="Oslo") == "Hello Oslo!"
