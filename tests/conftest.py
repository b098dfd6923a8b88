from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    # aiohttp runs on asyncio only; debug mode reports never-awaited coroutines and slow callbacks
    return ("asyncio", {"debug": True})


@pytest.fixture(autouse=True)
def _own_state_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every CLI it starts) keeps its account ledger in its own folder: never
    the developer's ``~/.local/state``, never another test's budgets."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("BULKDM_LEDGER", raising=False)


class _PostgresServer:
    """A throwaway PostgreSQL server in a temporary folder, on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bulkdm-pg-"))
        self.bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                     check=True, timeout=30).stdout.strip()
        # initdb refuses root: the server runs as the postgres user, in a folder it owns
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        self.port = _free_port()

    def start(self) -> str:
        self._run("initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "bulkdm")
        self.resume()
        return f"postgresql://bulkdm@127.0.0.1:{self.port}/postgres"

    def halt(self) -> None:
        """Stop the server, keeping its data for :meth:`resume`."""
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server on its data folder and port (again, after :meth:`halt`)."""
        options = (f"-k {self.folder} -p {self.port} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "log"),
                  "-w", "-o", options, "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self.as_user, f"{self.bindir}/{program}", *args], check=True,
                       capture_output=True, timeout=120)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a real PostgreSQL server started for this session (stopped at its end).

    When it cannot start, the tests that need it fail in CI (``CI`` set) and skip elsewhere."""
    try:
        server = _PostgresServer()
        url = server.start()
    except (OSError, KeyError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        reason = f"no PostgreSQL server for the ledger tests: {exc} {detail.decode()[-300:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield url
    finally:
        server.stop()


_databases = iter(range(1, 1_000_000))


@pytest.fixture
def postgres_db(postgres_url: str) -> str:
    """A fresh, empty database on the session's server, for one test."""
    name = f"t{next(_databases)}"
    subprocess.run(["psql", postgres_url, "-q", "-c", f"CREATE DATABASE {name}"], check=True,
                   capture_output=True, timeout=60)
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"
