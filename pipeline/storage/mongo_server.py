"""The local MongoDB-protocol server used when ``MONGODB_URI`` is unset.

No mongod can be installed from the registries these machines reach; SecantusDB (PyPI) speaks the wire protocol and
unmodified pymongo works against it. It runs as a separate process with its data under ``DATA_DIR/mongo``. A second
pipeline process on the same data folder (the app plus a command-line ``ingest``, say) reuses the running server found
in ``server.json`` instead of fighting over the storage; only the process that started a server stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import BackendUnavailable
from ..ports import free_port

READY_TIMEOUT_S = 30.0


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
    exe = Path(sys.executable).parent / "secantusd-py"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("secantusd-py")
    if not found:
        raise BackendUnavailable(
            "No MONGODB_URI is set and the local MongoDB-protocol server (secantusdb) is not installed: "
            "run 'pip install -r requirements.txt' or set MONGODB_URI."
        )
    return [found]


class LocalMongoServer:
    def __init__(self, storage: Path, host: str = "127.0.0.1") -> None:
        self.storage = Path(storage)
        self.host = host
        self.process: subprocess.Popen | None = None
        self.uri: str | None = None

    @property
    def _state_file(self) -> Path:
        return self.storage / "server.json"

    def _running_server(self) -> str | None:
        try:
            state = json.loads(self._state_file.read_text())
            os.kill(int(state["pid"]), 0)
        except (OSError, ValueError, KeyError):
            return None
        return state["uri"] if _answers(state["uri"]) else None

    def start(self) -> str:
        """Reuse a live server on this storage, or start one; returns its URI."""
        self.storage.mkdir(parents=True, exist_ok=True)
        existing = self._running_server()
        if existing:
            self.uri = existing
            return existing
        port = free_port(self.host)
        uri = f"mongodb://{self.host}:{port}/?directConnection=true"
        command = [
            *_server_command(),
            *("--host", self.host, "--port", str(port), "--storage-path", str(self.storage / "db")),
            *("--standalone", "--log-level", "WARNING"),
        ]
        with open(self.storage / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.storage / "server.log").read_text(errors="replace").splitlines()[-5:]
                raise BackendUnavailable(
                    "The local MongoDB-protocol server did not start: " + (" | ".join(tail) or "no output")
                )
            if _answers(uri, 300):
                self.uri = uri
                self._state_file.write_text(json.dumps({"pid": self.process.pid, "uri": uri}))
                return uri
            time.sleep(0.1)
        self.stop()
        raise BackendUnavailable(f"The local MongoDB-protocol server did not answer within {READY_TIMEOUT_S:.0f} s.")

    def stop(self) -> None:
        """Stop the server if this object started it (SIGTERM lets WiredTiger close cleanly)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        try:
            if json.loads(self._state_file.read_text()).get("pid") == process.pid:
                self._state_file.unlink()
        except (OSError, ValueError):
            pass
