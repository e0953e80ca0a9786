"""A newcomer's first mistakes get clear answers: help, apps that cannot load, Ctrl-C while
work runs, and the console saying what happened to an instance."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import APPS, EXAMPLE_APP, HostProcess
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


def dfhost(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dfhost", *args], capture_output=True, text=True, timeout=60
    )


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in {"host.json": '{"version": "2.0"}', **files}.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def test_no_arguments_prints_the_help() -> None:
    result = dfhost()
    assert result.returncode == 0
    assert result.stdout.startswith("usage: dfhost")
    assert "start" in result.stdout and "instances" in result.stdout


def test_an_app_whose_function_app_fails_to_import_does_not_start(tmp_path: Path) -> None:
    app = write(
        tmp_path / "app",
        {
            "function_app.py": """\
                import azure.functions as func

                app = func.FunctionApp()
                retries = settings["retries"]
            """
        },
    )
    result = dfhost("start", str(app), "--port", "0")
    assert result.returncode == 2
    # As Python shows it: the file and line, the source line, the caret, the exception; and
    # none of dfhost's own frames.
    assert f'File "{app / "function_app.py"}", line 4, in <module>' in result.stderr
    assert '    retries = settings["retries"]\n              ^^^^^^^^\n' in result.stderr
    assert "NameError: name 'settings' is not defined" in result.stderr
    assert "importlib" not in result.stderr and "dfhost/" not in result.stderr
    assert "no function to run" in result.stderr
    assert "listening" not in result.stderr


def test_a_syntax_error_shows_the_line_and_caret(tmp_path: Path) -> None:
    app = write(tmp_path / "app", {"function_app.py": "import azure.functions as func\ndef f(:\n"})
    result = dfhost("start", str(app), "--port", "0")
    assert result.returncode == 2
    assert f'File "{app / "function_app.py"}", line 2' in result.stderr
    assert "    def f(:\n          ^\n" in result.stderr
    assert "SyntaxError: invalid syntax" in result.stderr


def test_a_folder_with_no_functions_does_not_start(tmp_path: Path) -> None:
    result = dfhost("start", str(write(tmp_path / "app", {})), "--port", "0")
    assert result.returncode == 2
    assert "no functions: expected function_app.py" in result.stderr
    assert "no function to run" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_v1_app_whose_only_function_fails_to_import_does_not_start(tmp_path: Path) -> None:
    app = write(
        tmp_path / "app",
        {
            "Work/function.json": '{"bindings": [{"name": "n", "type": "activityTrigger"}]}',
            "Work/__init__.py": "from shared_code import helper\n\ndef main(n):\n    return n\n",
            "shared_code/__init__.py": "",
            "shared_code/helper.py": "LIMIT = 1 / 0\n",
        },
    )
    result = dfhost("start", str(app), "--port", "0")
    assert result.returncode == 2
    # The user's frames, down to the helper module that raised.
    assert f'File "{app / "Work" / "__init__.py"}", line 1, in <module>' in result.stderr
    assert f'File "{app / "shared_code" / "helper.py"}", line 1, in <module>' in result.stderr
    assert "ZeroDivisionError: division by zero" in result.stderr


async def test_a_v1_function_that_fails_to_import_is_named_and_the_rest_run(
    tmp_path: Path,
) -> None:
    host = HostProcess(APPS / "v1_broken", f"sqlite:///{tmp_path / 'hub.sqlite3'}").start()
    host.stop()
    assert "function 'BadImport': import failed with ModuleNotFoundError" in host.output
    assert "listening on" in host.output


@pytest.fixture
def example(tmp_path: Path) -> HostProcess:
    # The activity sleeps for WORK_SECONDS: long enough to press Ctrl-C while it runs.
    return HostProcess(EXAMPLE_APP, f"sqlite:///{tmp_path / 'hub.sqlite3'}", {"WORK_SECONDS": "3"})


async def _start_loop(host: HostProcess) -> str:
    async with httpx.AsyncClient(base_url=host.origin) as http:
        response = await http.post("/api/orchestrators/durable-orchestrator")
    assert response.status_code == 202
    iid: str = response.json()["id"]
    await eventually(lambda: host.output, lambda out: "working on cleanup" in out, timeout=20)
    return iid


async def test_ctrl_c_waits_for_the_running_activity_and_exits_cleanly(
    example: HostProcess, sdk_session: None
) -> None:
    example.start()
    await _start_loop(example)
    assert example.proc is not None
    example.proc.send_signal(signal.SIGINT)
    assert example.proc.wait(30) == 0
    example.stop()
    waiting = (
        "dfhost: waiting up to 30 s for 1 running activity: durable-activity, Ctrl-C again to "
        "stop now"
    )
    lines = example.lines
    said = [i for i, line in enumerate(lines) if line.endswith(waiting)]
    assert len(said) == 1, example.output
    # The activity finished after that line, and its result was recorded.
    assert any("Executed 'Functions.durable-activity' (Succeeded" in x for x in lines[said[0] :])
    assert "Traceback" not in example.output
    assert "Unclosed" not in example.output  # the SDK's client session is closed


async def test_a_second_ctrl_c_stops_at_once_and_the_activity_runs_again(
    example: HostProcess, tmp_path: Path, sdk_session: None
) -> None:
    example.env["WORK_SECONDS"] = "60"
    example.start()
    await _start_loop(example)
    assert example.proc is not None
    example.proc.send_signal(signal.SIGINT)
    await eventually(
        lambda: example.output, lambda out: "Ctrl-C again to stop now" in out, timeout=20
    )
    example.proc.send_signal(signal.SIGINT)
    assert example.proc.wait(10) == 128 + signal.SIGINT
    example.stop()
    assert "Traceback" not in example.output
    # At least once: the next host on the hub runs the interrupted activity again.
    again = HostProcess(EXAMPLE_APP, example.store_url, {"WORK_SECONDS": "0"}).start()
    try:
        await eventually(lambda: again.output, lambda out: "working on cleanup" in out, timeout=20)
    finally:
        again.stop()


async def test_terminate_suspend_resume_and_purge_each_log_one_line(
    tmp_path: Path, sdk_session: None
) -> None:
    host = HostProcess(
        EXAMPLE_APP, f"sqlite:///{tmp_path / 'hub.sqlite3'}", {"WORK_SECONDS": "0"}
    ).start()
    try:
        iid = await _start_loop(host)
        base = f"/runtime/webhooks/durabletask/instances/{iid}"
        async with httpx.AsyncClient(base_url=host.origin) as http:
            for action, line in (
                ("suspend?reason=maintenance", "suspended: maintenance"),
                ("resume", "resumed"),
                ("terminate?reason=enough", "terminated: enough"),
            ):
                assert (await http.post(f"{base}/{action}")).status_code == 202
                expected = f"dfhost: durable-orchestrator ({iid}) {line}"
                await _said(host, expected)
            assert (await http.delete(base)).status_code == 200
            await eventually(
                lambda: host.output,
                lambda out: f"dfhost: purged instance {iid}" in out,
                timeout=20,
            )
    finally:
        host.stop()
    for line in ("suspended", "resumed", "terminated", "purged instance"):
        assert sum(line in x for x in host.lines if x.startswith("[")) == 1, line


async def _said(host: HostProcess, text: str) -> None:
    await eventually(lambda: text in host.output, timeout=20, what=f"the line {text!r}")
