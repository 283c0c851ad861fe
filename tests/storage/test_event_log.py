"""The event log through a real MongoDB outage: a SecantusDB server killed with SIGKILL and started again on the same
port, inside one process. While it is down events go to Python logging; once it answers they go to MongoDB again;
every event ends up in exactly one of the two places, and ``write()`` never waits."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.processes.mongo_server import _answers, _server_command
from pipeline.processes.ports import free_port
from pipeline.storage.catalog_store import connect
from pipeline.storage.event_log import LOG_COLLECTION, LOG_DB, EventLog


class RawServer:
    """``secantusd-py`` on a fixed port with no guard: the test kills and restarts it."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/?directConnection=true"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *_server_command(),
                *("--host", "127.0.0.1", "--port", str(self.port), "--storage-path", str(self.storage)),
                *("--standalone", "--log-level", "WARNING"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not _answers(self.uri, 300):
            assert self.process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def server(tmp_path):
    raw = RawServer(tmp_path / "db")
    raw.start()
    yield raw
    if raw.process is not None and raw.process.poll() is None:
        raw.process.send_signal(signal.SIGCONT)
        raw.kill()  # a throwaway folder: no clean close needed


def logged(caplog, kind: str = "probe") -> list[int]:
    return [
        r.args["seq"]
        for r in caplog.records
        if r.name == "pipeline.events" and isinstance(r.args, dict) and r.args.get("kind") == kind
    ]


def test_events_go_to_logging_while_mongo_is_down_and_back_to_mongo_after_a_restart(server, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.events")
    client = connect(server.uri, 500)
    events = EventLog(client, retry_s=(0.1, 0.4))
    collection = client[LOG_DB][LOG_COLLECTION]
    try:
        for seq in range(5):
            events.write("probe", seq=seq)
        events.flush()
        assert events.stored == 5 and events.to_mongo

        server.kill()  # SIGKILL: the acknowledged (journaled) events must survive it
        started = time.perf_counter()
        for seq in range(5, 10):
            events.write("probe", seq=seq)
        assert time.perf_counter() - started < 0.05, "write() does not wait for MongoDB"
        events.flush()
        assert logged(caplog) == list(range(5, 10)) and not events.to_mongo
        assert events.fallbacks == 5

        server.start()  # same port, same data: the same client, no restart of anything else
        seq = 9
        deadline = time.monotonic() + 20
        while not events.to_mongo:
            assert time.monotonic() < deadline, "the event log did not go back to MongoDB"
            seq += 1
            events.write("probe", seq=seq)
            events.flush()
            time.sleep(0.05)
        last = seq + 3
        for more in range(seq + 1, last + 1):
            events.write("probe", seq=more)
        events.flush()

        stored = sorted(d["seq"] for d in collection.find({"kind": "probe"}))
        in_log = logged(caplog)
        assert sorted(stored + in_log) == list(range(last + 1)), (stored, in_log)  # none lost, none twice
        assert stored[:5] == [0, 1, 2, 3, 4] and stored[-3:] == [last - 2, last - 1, last]
        messages = [r.getMessage() for r in caplog.records if r.name == "pipeline.events"]
        assert sum("does not answer" in m for m in messages) == 1, "one warning for the outage"
        assert sum("answers again" in m for m in messages) == 1
    finally:
        events.close()
        client.close()


def test_write_never_blocks_on_a_hung_mongo(server):
    client = connect(server.uri, 500)
    events = EventLog(client, max_queue=5)
    try:
        events.write("probe", seq=-1)
        events.flush()
        server.process.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
        started = time.perf_counter()
        for seq in range(200):
            events.write("probe", seq=seq)
        assert time.perf_counter() - started < 0.1
        assert events.dropped >= 200 - 6, "a full queue drops (and counts) events instead of waiting"
    finally:
        server.process.send_signal(signal.SIGCONT)
        events.close()
        client.close()


def test_with_no_client_every_event_goes_to_logging(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.events")
    events = EventLog(None)
    for seq in range(3):
        events.write("probe", seq=seq)
    events.write("error", error="boom")
    events.close()
    assert logged(caplog) == [0, 1, 2] and events.fallbacks == 4 and not events.to_mongo
    assert any(r.levelno == logging.WARNING and "boom" in r.getMessage() for r in caplog.records)


def test_a_refused_or_unstorable_event_costs_only_itself(server, caplog):
    """Events go to MongoDB in batches: one MongoDB refuses (a duplicate _id) or BSON cannot hold is logged with the
    reason, the others of its batch are stored."""
    caplog.set_level(logging.INFO, logger="pipeline.events")
    client = connect(server.uri, 500)
    events = EventLog(client, linger_s=0.3)  # long enough for all of them to share one batch
    try:
        events.write("probe", seq=0, _id="twice")
        events.write("probe", seq=1, _id="twice")
        events.write("probe", seq=2)
        events.write("probe", seq=3, odd=object())
        events.write("probe", seq=4)
        events.flush()
        stored = sorted(d["seq"] for d in client[LOG_DB][LOG_COLLECTION].find({"kind": "probe"}))
        assert stored == [0, 2, 4] and logged(caplog) == [1, 3], (stored, logged(caplog))
        assert events.stored == 3 and events.fallbacks == 2 and events.to_mongo
        reasons = [r.args.get("log_error", "") for r in caplog.records if r.name == "pipeline.events" and r.args]
        assert any("duplicate" in why.lower() for why in reasons) and "not storable in MongoDB" in reasons
    finally:
        events.close()
        client.close()
