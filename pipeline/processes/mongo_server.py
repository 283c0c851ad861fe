"""The local MongoDB-protocol server used when ``MONGODB_URI`` is unset.

No mongod can be installed from the registries these machines reach; SecantusDB (PyPI) speaks the wire protocol and
unmodified pymongo works against it. It runs as a separate process with its data under ``DATA_DIR/mongo``, watched by
a small guard process (``pipeline.storage.mongo_guard``, its parent) that keeps it from outliving its users:

- each process that uses the server holds a lease (``DATA_DIR/mongo/leases/<pid>-<token>``); a second pipeline process
  on the same data folder (the app plus a command-line ``ingest``, say) takes a lease on the running server found in
  ``server.json`` instead of fighting over the storage;
- a clean ``stop()`` of the last user stops the server at once (and ``server.json`` is gone when it returns);
- after a ``kill -9`` of a user its lease is stale: the next start reuses the server, or the guard stops it and exits
  once no lease has been live for ``GRACE_S`` seconds; it also stops when the data folder is deleted;
- a server that dies is restarted by the guard on the same port, so the URI never changes and pymongo clients
  reconnect by themselves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from ..errors import BackendUnavailable
from ..processes.ports import free_port
from . import mongo_guard
from .mongo_guard import GRACE_S, is_running, live_leases, read_state, signal_process, storage_lock, wait_gone

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

    @property
    def process(self) -> SimpleNamespace | None:
        """Compatibility: an object whose ``pid`` is the server's (``server_pid`` says the same)."""
        pid = self.server_pid
        return SimpleNamespace(pid=pid) if pid else None

    def start(self) -> str:
        """Take a lease on the live server on this storage, or start one (with its guard); returns its URI."""
        if self._lease is not None and self.uri:
            return self.uri
        _server_command()  # a clear error before anything is written
        self.storage.mkdir(parents=True, exist_ok=True)
        with storage_lock(self.storage):
            self._lease = mongo_guard.take_lease(self.storage)
            self._owner = os.getpid()
            try:
                self.uri = self._running_server() or self._start_guard()
            except BaseException:
                self._drop_lease()
                raise
            return self.uri

    def _running_server(self) -> str | None:
        """The URI of the server of a live guard (waiting while it restarts one); a leftover without a guard is
        stopped (after checking that its pid is still the recorded process)."""
        state = read_state(self.storage)
        if not state:
            return None
        if "guard_pid" not in state:
            self._stop_legacy(state)
            return None
        if not is_running(state.get("guard_pid"), state.get("guard_start")):
            if signal_process(state.get("pid"), state.get("start"), signal.SIGTERM) and not wait_gone(
                state["pid"], state.get("start"), mongo_guard.STOP_TIMEOUT_S
            ):
                signal_process(state["pid"], state.get("start"), signal.SIGKILL)
                wait_gone(state["pid"], state.get("start"), 5)
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

    def _stop_legacy(self, state: dict) -> None:
        """A server recorded by an older version (its own session, no guard): stop it if it is still that server."""
        pid = state.get("pid")
        try:
            cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
        except (OSError, TypeError, ValueError):
            cmdline = []
        if any(b"secantusd" in part for part in cmdline) and str(self.storage / "db").encode() in cmdline:
            start = mongo_guard.process_start(pid)
            os.kill(pid, signal.SIGTERM)
            if not wait_gone(pid, start, mongo_guard.STOP_TIMEOUT_S):
                signal_process(pid, start, signal.SIGKILL)
                wait_gone(pid, start, 5)
        self._state_file.unlink(missing_ok=True)

    def _start_guard(self) -> str:
        port = free_port(self.host)
        uri = f"mongodb://{self.host}:{port}/?directConnection=true"
        command = [
            *(sys.executable, "-m", "pipeline.storage.mongo_guard"),
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
        if signal_process(pid, start, signal.SIGTERM) and not self._wait_guard(pid, start, STOP_TIMEOUT_S):
            signal_process(pid, start, signal.SIGKILL)  # the server gets SIGTERM when its guard dies
            self._wait_guard(pid, start, 5)
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
            with storage_lock(self.storage):
                self._drop_lease()
                if live_leases(self.storage):
                    return
                state = read_state(self.storage)
                if state and "guard_pid" in state:
                    self._stop_guard(state["guard_pid"], state.get("guard_start"))
        except FileNotFoundError:  # the data folder is gone: so is the lease, and the guard stops by itself
            self._lease = None
        finally:
            for pid, child in list(_SPAWNED.items()):  # guards that stopped by themselves meanwhile
                if child.poll() is not None:
                    _SPAWNED.pop(pid, None)
