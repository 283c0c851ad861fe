"""The local MongoDB-protocol server (SecantusDB's ``secantusd-py``), used when ``MONGODB_URI`` is unset.

No mongod can be installed here; SecantusDB speaks the wire protocol to unmodified pymongo. The server keeps its data
in ``DATA_DIR/mongo`` and runs under ``mongo_guard``: every process that uses it takes a lease on the running server
(the app and a command-line ``ingest`` share one), the last user's clean ``stop()`` stops it at once, and after a
``kill -9`` the next start reuses it or the guard stops it by itself. A server that dies is restarted on the same port,
so the URI never changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ..errors import BackendUnavailable
from . import mongo_guard
from .locks import locked
from .mongo_guard import GRACE_S, LOCK_FILE, live_leases, read_state
from .ports import free_port
from .stopping import is_running, stop_pid, wait_gone

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = mongo_guard.STOP_TIMEOUT_S + 5
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding ``pipeline``: where the guard is run from
_SPAWNED: dict[int, subprocess.Popen] = {}  # guards this process started, by pid: waited for (never left as zombies)


def _answers(uri: str, timeout_ms: int = 500) -> bool:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client = MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, directConnection=True)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def _server_command() -> list[str]:
    command = mongo_guard.server_command()
    if command is None:
        raise BackendUnavailable(
            "No MONGODB_URI is set and the local MongoDB-protocol server (secantusdb) is not installed: "
            "run 'pip install -r requirements.txt' or set MONGODB_URI."
        )
    return command


def _log_tail(storage: Path) -> str:
    try:
        lines = (storage / mongo_guard.LOG_FILE).read_text(errors="replace").splitlines()[-5:]
    except OSError:
        return "no output"
    return " | ".join(lines) or "no output"


class LocalMongoServer:
    def __init__(self, storage: Path, host: str = "127.0.0.1", grace_s: float = GRACE_S) -> None:
        self.storage = Path(storage).resolve()
        self.host = host
        self.grace_s = grace_s
        self.uri: str | None = None
        self._lease: Path | None = None
        self._owner = os.getpid()

    @property
    def _state_file(self) -> Path:
        return self.storage / mongo_guard.STATE_FILE

    @property
    def server_pid(self) -> int | None:
        """The pid of the server process now (the guard restarts it if it dies), or None."""
        state = read_state(self.storage)
        if state and is_running(state.get("pid"), state.get("start")):
            return state["pid"]
        return None

    def start(self) -> str:
        """Take a lease on the live server on this storage, or start one (with its guard); returns its URI."""
        if self._lease is not None and self.uri:
            return self.uri
        _server_command()  # a clear error before anything is written
        self.storage.mkdir(parents=True, exist_ok=True)
        with locked(self.storage / LOCK_FILE):
            self._lease = mongo_guard.take_lease(self.storage)
            self._owner = os.getpid()
            try:
                self.uri = self._running_server() or self._start_guard()
            except BaseException:
                self._drop_lease()
                raise
            return self.uri

    def _running_server(self) -> str | None:
        """The URI of the server of a live guard (waiting while it restarts one); a server left without its guard is
        stopped (only if its pid is still the recorded process: pids are reused)."""
        state = read_state(self.storage)
        if not state:
            return None
        if not is_running(state.get("guard_pid"), state.get("guard_start")):
            stop_pid(state.get("pid"), state.get("start"), mongo_guard.STOP_TIMEOUT_S)
            self._state_file.unlink(missing_ok=True)
            return None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _answers(state["uri"], 300):
            if time.monotonic() >= deadline or not is_running(state["guard_pid"], state.get("guard_start")):
                raise BackendUnavailable(
                    f"The local MongoDB-protocol server on {state['uri']} (guard pid {state['guard_pid']}) does not "
                    f"answer: {_log_tail(self.storage)}"
                )
            time.sleep(0.1)
        return state["uri"]

    def _start_guard(self) -> str:
        port = free_port(self.host)
        uri = f"mongodb://{self.host}:{port}/?directConnection=true"
        command = [
            *(sys.executable, "-m", "pipeline.processes.mongo_guard"),
            *("--storage", str(self.storage), "--host", self.host, "--port", str(port), "--grace", str(self.grace_s)),
        ]
        with open(self.storage / mongo_guard.LOG_FILE, "ab") as log:
            guard = subprocess.Popen(
                command,
                cwd=PACKAGE_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a signal to this process's group (Ctrl-C, a killed `make run`) is not its
            )
        _SPAWNED[guard.pid] = guard
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if guard.poll() is not None:
                _SPAWNED.pop(guard.pid, None)
                raise BackendUnavailable(f"The local MongoDB-protocol server did not start: {_log_tail(self.storage)}")
            state = read_state(self.storage)
            if state and state.get("guard_pid") == guard.pid and _answers(uri, 300):
                return uri
            time.sleep(0.1)
        self._stop_guard(guard.pid, None)
        raise BackendUnavailable(f"The local MongoDB-protocol server did not answer within {READY_TIMEOUT_S:.0f} s.")

    def _stop_guard(self, pid: int, start: object) -> None:
        # a guard killed past the timeout takes its server with it (the server gets SIGTERM when its guard dies)
        stop_pid(pid, start, STOP_TIMEOUT_S, wait=lambda timeout_s: self._wait_guard(pid, start, timeout_s))
        state = read_state(self.storage)
        if state and state.get("guard_pid") == pid and not is_running(pid, start):
            self._state_file.unlink(missing_ok=True)

    def _wait_guard(self, pid: int, start: object, timeout_s: float) -> bool:
        child = _SPAWNED.get(pid)
        if child is None:
            return wait_gone(pid, start, timeout_s)
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        _SPAWNED.pop(pid, None)
        return True

    def _drop_lease(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.unlink(missing_ok=True)

    def stop(self) -> None:
        """Give up this lease; if no other live process uses the server, stop it now (its guard stops it with SIGTERM,
        which lets WiredTiger close cleanly) and wait until it is gone."""
        if self._lease is None or os.getpid() != self._owner:  # never on behalf of a forked child
            return
        try:
            with locked(self.storage / LOCK_FILE):
                self._drop_lease()
                if live_leases(self.storage):
                    return
                state = read_state(self.storage)
                if state:
                    self._stop_guard(state.get("guard_pid"), state.get("guard_start"))
        except FileNotFoundError:  # the data folder is gone: so is the lease, and the guard stops by itself
            self._lease = None
        finally:
            for pid, child in list(_SPAWNED.items()):  # guards that stopped by themselves meanwhile
                if child.poll() is not None:
                    _SPAWNED.pop(pid, None)
