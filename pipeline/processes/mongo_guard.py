"""The guard of the local MongoDB-protocol server: its parent, so that the server never outlives its users.

``python -m pipeline.processes.mongo_guard --storage DIR --host HOST --port PORT [--grace S]``, started by
``LocalMongoServer`` in a session of its own so that it survives a ``kill -9`` of its starter; it records itself and
its server in ``DIR/server.json``. Each user holds a lease (``DIR/leases/<pid>-<token>``, its pid and start time). The
guard restarts a server that dies on the same port (clients keep their URI), and stops it with SIGTERM, which lets
WiredTiger close cleanly, when no lease has been live for ``--grace`` seconds, on SIGTERM, or when DIR is deleted.
Decisions that race with a user starting or stopping are made under the lock on ``DIR/lock``. It imports only the
standard library and ``pipeline.processes``' helpers: it runs for as long as the server does and should stay small.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from .locks import locked
from .stopping import KILLED, is_running, process_start, stop_child

GRACE_S = 5.0  # how long the server outlives its last user (a restarting app reuses it)
TICK_S = 0.25  # how often the guard looks at its leases, its server and its folder
STOP_TIMEOUT_S = 15.0  # how long the server gets to stop on SIGTERM before it is killed
RESTART_BACKOFF_S = (0.2, 5.0)  # first and longest wait before restarting a server that died

STATE_FILE = "server.json"
LEASES = "leases"
LOCK_FILE = "lock"
LOG_FILE = "server.log"


# -- leases and the state file -----------------------------------------------------------------------------------------


def take_lease(storage: Path) -> Path:
    """A lease for this process (several per process are fine: each has its own token)."""
    folder = storage / LEASES
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    path = folder / f"{pid}-{uuid.uuid4().hex[:8]}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"pid": pid, "start": process_start(pid)}))
    tmp.replace(path)
    return path


def live_leases(storage: Path, prune: bool = True) -> list[Path]:
    """The leases whose process still runs; stale ones are removed on the way."""
    live = []
    try:
        entries = list((storage / LEASES).iterdir())
    except OSError:
        return []
    for path in entries:
        if path.name.endswith(".tmp"):
            continue
        try:
            lease = json.loads(path.read_text())
            alive = is_running(lease.get("pid"), lease.get("start"))
        except (OSError, ValueError, AttributeError):
            alive = False  # unreadable (a half-written lease is never visible: it is renamed into place)
        if alive:
            live.append(path)
        elif prune:
            with contextlib.suppress(OSError):
                path.unlink()
    return live


def read_state(storage: Path) -> dict | None:
    try:
        state = json.loads((storage / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(storage: Path, state: dict) -> None:
    tmp = storage / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(storage / STATE_FILE)


# -- the guard ---------------------------------------------------------------------------------------------------------


def server_command() -> list[str] | None:
    exe = Path(sys.executable).parent / "secantusd-py"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("secantusd-py")
    return [found] if found else None


def _die_with_parent():
    """For the server's ``preexec_fn``: SIGTERM when the guard dies, however it dies (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the guard died before prctl took effect
            os._exit(1)

    return preexec


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} mongo_guard[{os.getpid()}]: {message}", flush=True)


class Guard:
    def __init__(self, storage: Path, host: str, port: int, grace_s: float, command: list[str]) -> None:
        self.storage = storage
        self.host = host
        self.port = port
        self.grace_s = grace_s
        self.command = command
        self.child: subprocess.Popen | None = None
        self.child_ready = False
        self.stopping = False
        self.pid = os.getpid()
        self.start = process_start(self.pid)
        self.identity = self._identity()
        self.db_seen = False

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = self.storage.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def folder_gone(self) -> bool:
        if self.identity is None or self._identity() != self.identity:
            return True
        db = (self.storage / "db").is_dir()
        self.db_seen = self.db_seen or db
        return self.db_seen and not db

    def spawn(self) -> None:
        argv = [
            *self.command,
            *("--host", self.host, "--port", str(self.port), "--storage-path", str(self.storage / "db")),
            *("--standalone", "--log-level", "WARNING"),
        ]
        self.child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, cwd="/", preexec_fn=_die_with_parent(), close_fds=True
        )
        self.child_ready = False

    def record(self) -> None:
        assert self.child is not None
        write_state(
            self.storage,
            {
                "uri": f"mongodb://{self.host}:{self.port}/?directConnection=true",
                "host": self.host,
                "port": self.port,
                "pid": self.child.pid,
                "start": process_start(self.child.pid),
                "guard_pid": self.pid,
                "guard_start": self.start,
            },
        )

    def forget(self) -> None:
        state = read_state(self.storage)
        if state and state.get("guard_pid") == self.pid:
            with contextlib.suppress(OSError):
                (self.storage / STATE_FILE).unlink()

    def stop_child(self) -> None:
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        # secantus closes its listening socket on SIGTERM but its accept thread stays blocked until a connection
        # arrives: poking the port wakes it, so the server stops without waiting out its own timeout.
        code = stop_child(child, STOP_TIMEOUT_S, poke=lambda: _port_open(self.host, self.port))
        if code == KILLED:
            _log(f"the server (pid {child.pid}) did not stop on SIGTERM; killed it")

    def run(self, wakeup: int) -> int:
        backoff = RESTART_BACKOFF_S[0]
        restart_at = 0.0
        idle_since: float | None = None
        reason = "stopped"
        try:
            while not self.stopping:
                now = time.monotonic()
                if self.folder_gone():
                    reason = f"{self.storage} is gone"
                    return 0
                if self.child is not None and self.child.poll() is not None:
                    _log(f"the server exited with status {self.child.returncode}; restarting it on port {self.port}")
                    self.child = None
                    restart_at = now + backoff
                    backoff = min(backoff * 2, RESTART_BACKOFF_S[1])
                if self.child is None and now >= restart_at:
                    self.spawn()
                if self.child is not None and not self.child_ready and _port_open(self.host, self.port):
                    self.child_ready = True
                    backoff = RESTART_BACKOFF_S[0]
                    self.record()
                if live_leases(self.storage):
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= self.grace_s:
                    # Under the lock, so that no user takes a lease on a server that is about to stop.
                    with locked(self.storage / LOCK_FILE, blocking=False) as held:
                        if held and not live_leases(self.storage):
                            reason = f"no process has used it for {self.grace_s:g} s"
                            self.forget()
                            self.stop_child()
                            return 0
                with contextlib.suppress(InterruptedError):
                    if select.select([wakeup], [], [], TICK_S if self.child_ready else 0.05)[0]:
                        os.read(wakeup, 512)
            reason = "asked to stop"
            return 0
        except FileNotFoundError:
            reason = f"{self.storage} is gone"
            return 0
        finally:
            with contextlib.suppress(OSError):
                self.forget()
            self.stop_child()
            _log(f"stopped the server on port {self.port}: {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.processes.mongo_guard", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--storage", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--grace", type=float, default=GRACE_S)
    args = parser.parse_args(argv)
    command = server_command()
    if command is None:
        _log("secantusd-py is not installed")
        return 2
    guard = Guard(args.storage.resolve(), args.host, args.port, args.grace, command)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)

    def stop(signum: int, frame: object) -> None:
        guard.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)
    return guard.run(read_end)


if __name__ == "__main__":
    sys.exit(main())
