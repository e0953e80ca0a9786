"""Schemathesis against a live `dfhost start` (engine included), as `st run --checks all`
runs it: every operation of the management API's OpenAPI document, with generated paths,
queries, headers and bodies, valid and invalid, through the examples, coverage, fuzzing and
stateful phases. The API must answer what its document says (no 5xx, valid data accepted,
invalid data refused, documented status codes, content types and bodies), and the host must
still be up afterwards.

`DFHOST_FUZZ_EXAMPLES` sets the examples per operation of the fuzzing phase (default 8; the
coverage phase, about 500 requests, takes most of the ~40 s);
`DFHOST_FUZZ_SEED` sets the seed (default: a fixed one, so the suite runs the same cases every
time; `random` for a new one each run, printed in the output to replay it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.security.conftest import APP_DIR, BASE
from tests.security.host import Host

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("DFHOST_FUZZ_EXAMPLES", "8"))
SEED = os.environ.get("DFHOST_FUZZ_SEED", "20260601")
HOOKS = Path(__file__).with_name("fuzz_hooks.py")
CONFIG = """
# 410 Gone answers valid data about an instance that has finished, as 409 does about one that
# has not: the instance's state, not the request, is what the action does not fit.
[checks.positive_data_acceptance]
expected-statuses = ["2XX", "3XX", 401, 403, 404, 409, 410, 429, "5XX"]

# Links from Location headers only: links inferred from response bodies would also hand an
# entity's id (listed with the instances) to the start of an orchestration, which refuses it.
[phases.stateful.inference]
algorithms = ["location-headers"]
"""


def _fuzzed_app(tmp_path: Path) -> Path:
    """The security app without its tiny payload limit: generated bodies and reasons would hit
    it, and 413 for valid data is right there but not what this test looks at."""
    app_dir = tmp_path / "app"
    shutil.copytree(APP_DIR, app_dir)
    host_json = json.loads((app_dir / "host.json").read_text())
    del host_json["extensions"]["durableTask"]["dfhost"]["limits"]["payloadBytes"]
    (app_dir / "host.json").write_text(json.dumps(host_json))
    return app_dir


@pytest.mark.timeout(300 + 5 * EXAMPLES)
def test_management_api_answers_as_its_openapi_document_says(tmp_path: Path) -> None:
    # synchronous=normal: a commit without waiting for the disk, as the suite's PostgreSQL
    # runs; most requests start an instance, and the fsyncs were most of the run's time.
    store = f"sqlite:///{tmp_path / 'hub.sqlite3'}?synchronous=normal"
    with Host(_fuzzed_app(tmp_path), "--store", store) as host:
        command = [
            str(Path(sys.executable).with_name("st")),
            "run",
            f"{host.origin}{BASE}/openapi.json",
            "--url",
            f"{host.origin}{BASE}",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(EXAMPLES),
            "--request-timeout",
            "10",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--no-color",
        ]
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG)
        command[1:1] = ["--config-file", str(config)]
        if SEED != "random":
            command += ["--seed", SEED]
        env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
        run = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=280 + 5 * EXAMPLES,
            env=env,
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
        assert "17/17" in run.stdout, run.stdout  # every operation was selected
        assert host.proc is not None and host.proc.poll() is None, host.output
    assert "Traceback" not in host.output, host.output
