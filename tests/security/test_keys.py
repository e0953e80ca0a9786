"""The keys file and the key variables (web/keys.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from dfhost.web.keys import SYSTEM_KEY, KeysError, load_keys

LONG = "k" * 20


def test_first_load_creates_a_private_file_and_shows_it_once(tmp_path: Path) -> None:
    first = load_keys(tmp_path / "hub", env={})
    assert first.created == tmp_path / "hub" / "keys.json"
    assert stat.S_IMODE(first.created.stat().st_mode) == 0o600
    assert set(first.shown) == {"master key", "host key 'default'", f"system key '{SYSTEM_KEY}'"}
    again = load_keys(tmp_path / "hub", env={})
    assert again.created is None and again.shown == {}
    assert again.keys == first.keys
    assert len({first.keys.master, *first.keys.host.values(), *first.keys.system.values()}) == 3


def test_environment_names_as_azures_win_over_the_file(tmp_path: Path) -> None:
    env = {
        "host__master": "M" * 20,
        "HOST.FUNCTION.ci": "H" * 20,
        "host__systemKey__durabletask_extension": "S" * 20,
        "functions__HttpStart__default": "F" * 20,
        "unrelated": "x",
        "host__function__": "ignored: no name",
    }
    loaded = load_keys(tmp_path, env=env)
    keys = loaded.keys
    assert keys.master == "M" * 20
    assert keys.host["ci"] == "H" * 20 and "default" in keys.host
    assert keys.system_keys() == ["S" * 20, "M" * 20]
    assert keys.function_keys("httpstart")[0] == "F" * 20
    assert "master key" not in loaded.shown  # the file's master key is not in effect
    assert f"system key '{SYSTEM_KEY}'" not in loaded.shown


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "must hold a JSON object"),
        ('{"masterKey": 5}', "masterKey must be a non-empty string"),
        ('{"masterKey": "short"}', "at least 16"),
        (json.dumps({"masterKey": LONG, "functionKeys": []}), "functionKeys must be an object"),
        (json.dumps({"masterKey": LONG, "functions": {"f": {"k": " " + LONG}}}), "functions.f.k"),
        (json.dumps({"masterKey": LONG, "functions": "all"}), "functions must be an object"),
    ],
)
def test_bad_files_are_refused_with_one_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "keys.json").write_text(content)
    with pytest.raises(KeysError, match=message):
        load_keys(tmp_path, env={})


def test_bad_variables_are_refused_with_their_name(tmp_path: Path) -> None:
    with pytest.raises(KeysError, match=r"environment variable host\.master"):
        load_keys(tmp_path, env={"host.master": "short"})
