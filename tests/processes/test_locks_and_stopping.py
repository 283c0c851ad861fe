"""The one file lock and the one way to stop a process, on real processes and real ``flock``s."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.processes.data_dir import LOCK_FILE, DataDirInUse, hold_data_dir
from pipeline.processes.locks import holder, locked, try_lock
from pipeline.processes.stopping import is_running, process_start, stop_child, stop_pid

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="checks processes through /proc")

# Ignores SIGTERM (so only the SIGKILL ends it) and says when it is ready.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)


def test_a_held_lock_is_refused_until_its_file_is_closed(tmp_path):
    path = tmp_path / "sub" / "lock"
    first = try_lock(path, record_pid=True)
    assert first is not None and holder(path).isdigit()
    assert try_lock(path) is None
    with locked(path, blocking=False) as held:
        assert not held
    first.close()
    with locked(path, blocking=False) as held:
        assert held


def test_a_second_app_on_a_data_folder_names_the_first(tmp_path):
    held = hold_data_dir(tmp_path / "data")
    try:
        with pytest.raises(DataDirInUse, match=rf"in use by another app \(pid {holder(tmp_path / 'data' / LOCK_FILE)}"):
            hold_data_dir(tmp_path / "data")
    finally:
        held.close()
    hold_data_dir(tmp_path / "data").close()


def _stubborn() -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    return child


def test_stop_child_kills_what_ignores_sigterm_after_the_timeout():
    child = _stubborn()
    started = time.monotonic()
    assert stop_child(child, timeout_s=0.3) == -signal.SIGKILL
    assert time.monotonic() - started >= 0.3
    child.stdout.close()


def test_stop_pid_stops_only_the_recorded_process():
    child = _stubborn()
    try:
        start = process_start(child.pid)
        assert stop_pid(child.pid, start + 1, timeout_s=0.1), "the recorded process (another start time) is gone"
        assert child.poll() is None and is_running(child.pid, start), "and the pid's new owner was never signalled"

        def reaped(timeout_s: float) -> bool:
            try:
                child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True

        assert stop_pid(child.pid, start, timeout_s=0.3, wait=reaped)
        assert child.returncode == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
