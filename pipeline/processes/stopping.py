"""The one way a process is stopped: SIGTERM, a bounded wait, then SIGKILL.

Processes the pipeline did not spawn itself (a server a previous app left running) are named by pid *and* start time,
since a pid can be reused by an unrelated process; those the pipeline spawned are ``Popen`` objects, reaped here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

_HAS_PROC = Path("/proc/self/stat").exists()
KILL_WAIT_S = 5.0  # after SIGKILL: the kernel frees a killed process in well under this
KILLED = -signal.SIGKILL  # the exit code (as Popen gives it) of a process that SIGKILL ended


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
    """Wait until the recorded process is gone; False if it still runs after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while is_running(pid, start):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def kill_group(pgid: int) -> None:
    """SIGKILL every process left in a process group (a child started with ``start_new_session`` leads one)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def stop_child(
    child: subprocess.Popen,
    timeout_s: float,
    group: bool = False,
    poke: Callable[[], object] | None = None,
) -> int | None:
    """Stop a process this one spawned and reap it; its exit code, or None if even SIGKILL did not end it in time.

    ``group``: the child leads its own process group (``start_new_session``); the SIGKILL then takes the whole group,
    so helpers it started and left behind go too."""
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                child.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                if poke is not None:
                    poke()
    if group:
        kill_group(child.pid)  # whatever is left in the group, the child itself included
    elif child.poll() is None:
        child.kill()
    try:
        return child.wait(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        return None


def stop_pid(pid: int, start: object, timeout_s: float, wait: Callable[[float], bool] | None = None) -> bool:
    """Stop a recorded process that this one may not have spawned; True once it is gone.

    ``wait(timeout)`` replaces the default wait (a caller that did spawn it reaps it there)."""
    wait = wait or (lambda timeout: wait_gone(pid, start, timeout))
    if not signal_process(pid, start, signal.SIGTERM):
        return not is_running(pid, start)
    if wait(timeout_s):
        return True
    signal_process(pid, start, signal.SIGKILL)
    return wait(KILL_WAIT_S)
