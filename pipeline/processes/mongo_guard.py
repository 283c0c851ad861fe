"""The guard of the local MongoDB-protocol server: runs it as its child and stops it when nobody uses it any more.

``python -m pipeline.storage.mongo_guard --storage DIR --host HOST --port PORT [--grace S]``, started by
``LocalMongoServer`` in a session of its own (so it outlives a ``kill -9`` of the process that started it). Every
process that uses the server holds a *lease*: a file ``DIR/leases/<pid>-<token>`` holding its pid and the process's
start time, removed when it stops cleanly; a lease whose process is gone (or whose pid is now another process's) is
stale.
The guard

- starts ``secantusd-py`` on PORT with its data in ``DIR/db`` (the server gets SIGTERM should the guard itself die),
  and records both processes in ``DIR/server.json`` once the port answers;
- restarts the server on the same port, with a backoff, if it dies (so clients keep their URI and reconnect by
  themselves);
- stops the server (SIGTERM: WiredTiger closes cleanly) and exits when no lease has been live for ``--grace`` seconds
  (a restarting app finds it still running), at once on SIGTERM (the last user's clean stop), and when DIR is gone or
  replaced (the data folder was deleted).

Decisions that must not race with a user that starts or stops (reading ``server.json``, taking or dropping a lease) are
made under ``flock(DIR/lock)``. This module imports nothing from the pipeline and nothing heavy: the guard is a few MB.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
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
from collections.abc import Iterator
from pathlib import Path

GRACE_S = 5.0  # how long the server outlives its last user (a restarting app reuses it)
TICK_S = 0.25  # how often the guard looks at its leases, its server and its folder
STOP_TIMEOUT_S = 15.0  # SIGTERM, then SIGKILL
RESTART_BACKOFF_S = (0.2, 5.0)  # first and longest wait before restarting a server that died

STATE_FILE = "server.json"
LEASES = "leases"
LOCK_FILE = "lock"
LOG_FILE = "server.log"


# -- processes, checked by pid *and* start time (a pid can be reused by an unrelated process) --------------------------


_HAS_PROC = Path("/proc/self/stat").exists()


def process_start(pid: int) -> int | None:
    """The start time of a running process (clock ticks since boot, from /proc), or None if it is gone or a zombie.

    Where there is no /proc, 0 for any live pid (then only the pid is checked)."""
    if _HAS_PROC:
        try:
            fields = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[-1].split()
        except (OSError, ValueError):
            return None
        return None if fields[0] in ("Z", "X") else int(fields[19])
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return 0
    except (OSError, ValueError):
        return None
    return 0


def is_running(pid: object, start: object) -> bool:
    """True if ``pid`` is running and is the process that started at ``start`` (as recorded by ``process_start``)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    now = process_start(pid)
    return now is not None and (start is None or now == start or now == 0)


def signal_process(pid: int, start: object, sig: int) -> bool:
    """Send ``sig`` only if ``pid`` is still the recorded process; False if it is not (gone, or the pid reused)."""
    if not is_running(pid, start):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pid: int, start: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while is_running(pid, start):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# -- leases, the lock, the state file ----------------------------------------------------------------------------------


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


@contextlib.contextmanager
def storage_lock(storage: Path, blocking: bool = True) -> Iterator[bool]:
    """``flock`` on ``DIR/lock``; yields False if ``blocking`` is off and another process holds it.

    Raises FileNotFoundError if the folder is gone. The kernel drops the lock of a killed process."""
    fd = os.open(storage / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


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
        child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                child.wait(timeout=0.05)
                return
            except subprocess.TimeoutExpired:
                # secantus closes its listening socket on SIGTERM but its accept thread stays blocked (and the stop
                # waits 2 s for it) until a connection arrives: one wakes it, so the server stops in a fraction.
                _port_open(self.host, self.port)
        _log(f"the server (pid {child.pid}) did not stop on SIGTERM; killing it")
        child.kill()
        child.wait(timeout=5)

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
                    with storage_lock(self.storage, blocking=False) as locked:
                        if locked and not live_leases(self.storage):
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
    parser = argparse.ArgumentParser(prog="python -m pipeline.storage.mongo_guard", description=__doc__.split("\n")[0])
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
