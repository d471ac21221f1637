"""A throwaway PostgreSQL server on loopback for the tests of Optuna studies with shared storage.

:func:`server` starts a real PostgreSQL (15 by default) in a temporary folder and yields the URL
``postgresql://study_user:<password>@127.0.0.1:<port>/study``; :data:`postgres_url` is the same as a
session-scoped pytest fixture. PostgreSQL refuses to run as root, so under root the server runs as
the ``postgres`` system user (``runuser``, else ``su``); otherwise as the current user.

Imported as ``study.postgres`` (pyproject's ``pythonpath = ["tests"]``; ``study`` is a namespace
package, like the other test folders it has no ``__init__.py``).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

# LSTM_JAX_PG_BIN points at another installation's bin folder (initdb, pg_ctl, psql).
PG_BIN = pathlib.Path(os.environ.get("LSTM_JAX_PG_BIN", "/usr/lib/postgresql/15/bin"))
PROGRAMS = ("initdb", "pg_ctl", "postgres", "psql")
SERVER_USER = "postgres"
DATABASE = "study"
ROLE = "study_user"


def _as_root() -> bool:
    return os.geteuid() == 0


def missing() -> str | None:
    """One line naming what this machine lacks to start the server, or None when nothing is missing."""
    absent = [name for name in PROGRAMS if not os.access(PG_BIN / name, os.X_OK)]
    if absent:
        return f"PostgreSQL not found: no {', '.join(absent)} in {PG_BIN} (set LSTM_JAX_PG_BIN to its bin folder)"
    if _as_root():
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no '{SERVER_USER}' user for PostgreSQL, which refuses root"
        if not (shutil.which("runuser") or shutil.which("su")):
            return f"running as root and neither runuser nor su is here to start PostgreSQL as '{SERVER_USER}'"
    return None


def postgres_or_skip() -> None:
    """``pytest.skip`` with the one line of :func:`missing` when the server cannot be started here."""
    reason = missing()
    if reason:
        pytest.skip(reason)


def _server_argv(argv: list[str]) -> list[str]:
    """``argv`` run as the server's user: the postgres user under root, else unchanged."""
    if not _as_root():
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", SERVER_USER, "--", *argv]
    return ["su", SERVER_USER, "-s", "/bin/sh", "-c", shlex.join(argv)]


def _run(what: str, argv: list[str], cwd: pathlib.Path, timeout: float, env: dict[str, str] | None = None) -> None:
    """Runs ``argv``; a failure raises one RuntimeError naming ``what`` with the program's own last lines."""
    proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {tail}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(log: pathlib.Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(lines[-3:]) or "no server log"


@contextlib.contextmanager
def server(parent: str | os.PathLike | None = None, timeout: float = 30.0) -> Iterator[str]:
    """Starts PostgreSQL on 127.0.0.1 and a free port; yields ``postgresql://study_user:pw@127.0.0.1:port/study``.

    The cluster lives in a new folder under ``parent`` (default: the system temporary folder), which
    the server's user must be able to reach: root's 0700 folders (``/tmp/pytest-of-root``, pytest's
    ``tmp_path``) are not. Every connection needs a password (scram-sha-256, local and TCP). On exit
    the server is stopped (``pg_ctl stop -m immediate``) and the folder removed. Raises RuntimeError
    with one line when the server does not start within ``timeout`` seconds or a step fails.
    """
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="lstm_jax-pg-", dir=parent))
    data, log = tmp / "data", tmp / "server.log"
    owner = pwd.getpwnam(SERVER_USER) if _as_root() else None
    started = False
    try:
        if owner:
            os.chown(tmp, owner.pw_uid, owner.pw_gid)
            # The folder is the server user's own (0700); its parents must let that user through.
            probe = subprocess.run(_server_argv(["test", "-w", str(tmp)]), stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=timeout)
            if probe.returncode != 0:
                raise RuntimeError(f"the '{SERVER_USER}' user cannot reach {tmp}: give its parent folders o+x "
                                   "or pass a parent it can reach")
        superuser_pw, role_pw = secrets.token_hex(16), secrets.token_hex(16)
        pwfile = tmp / "superuser-password"
        pwfile.write_text(superuser_pw + "\n")
        if owner:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        # --no-sync and fsync=off: a throwaway cluster need not survive a power cut; C locale: no
        # dependence on the locales this machine has generated.
        _run("initdb", _server_argv([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                                     f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C",
                                     "--no-sync", "--no-instructions"]), cwd=tmp, timeout=timeout)
        pwfile.unlink()
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{tmp}'\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        deadline = time.monotonic() + timeout
        while True:
            port = _free_port()
            # pg_ctl -w returns once the server accepts connections (postmaster.pid says ready).
            start = subprocess.run(
                _server_argv([str(PG_BIN / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w",
                              "-t", str(max(1, int(deadline - time.monotonic()))), "-o", f"-p {port}"]),
                cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout + 10)
            started = started or start.returncode == 0 or (data / "postmaster.pid").exists()
            if start.returncode == 0:
                break
            # The port was free a moment ago; another process may have taken it since: try another.
            if "could not bind" in _log_tail(log) and time.monotonic() < deadline:
                continue
            raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1:{port}: {_log_tail(log)}")
        # The caller's PG* variables (PGSSLMODE, PGOPTIONS, ...) must not reach this cluster's psql.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGPASSWORD=superuser_pw, PGCONNECT_TIMEOUT=str(int(timeout)))
        _run("creating the study role and database",
             [str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port),
              "-U", "postgres", "-d", "postgres",
              "-c", f"CREATE ROLE {ROLE} LOGIN PASSWORD '{role_pw}'",
              "-c", f"CREATE DATABASE {DATABASE} OWNER {ROLE}"], cwd=tmp, timeout=timeout, env=env)
        yield f"postgresql://{ROLE}:{role_pw}@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            subprocess.run(_server_argv([str(PG_BIN / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w"]),
                           cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of one PostgreSQL server for the whole session (see :func:`server`); skips when it cannot run."""
    postgres_or_skip()
    with server() as url:
        yield url
