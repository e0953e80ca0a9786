"""`pip install dfhost` has no Azure SDK, psycopg or gRPC: starting an app on the default SQLite
hub must not import them (the README's first command broke when picking the hub imported the
Azure backend's store)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Each optional driver made unimportable (a None entry in sys.modules raises ImportError).
SCRIPT = """
import sys
for name in ("azure.core", "azure.data", "azure.storage", "psycopg", "grpc", "durabletask"):
    sys.modules[name] = None
from pathlib import Path
from dfhost.app.loader import load_app
from dfhost.cli.common import command_store_url
from dfhost.store import open_store
app_dir = Path(sys.argv[1])
url = command_store_url(app_dir, None, load_app(app_dir).settings)
open_store(url)
print(url)
"""


def test_an_app_on_the_default_hub_needs_no_optional_driver(tmp_path: Path) -> None:
    app = tmp_path / "app"
    subprocess.run(["cp", "-r", str(ROOT / "examples" / "eternal_timer"), str(app)], check=True)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(app)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("sqlite:///")
