"""The local MongoDB-protocol server never outlives its users, caused for real: ``kill -9`` of the process that started
it (a script holding a server, a ``python -m pipeline ingest``), a deleted data folder, two processes sharing one
server, the server itself killed. Orphans are looked for by the pids recorded in ``server.json`` and in /proc."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.processes import mongo_guard
from pipeline.processes.mongo_guard import GRACE_S, read_state
from pipeline.processes.mongo_server import LocalMongoServer
from pipeline.processes.stopping import is_running, process_start, signal_process
from pipeline.service import Pipeline
from pipeline.settings import Settings
from pipeline.storage.catalog_store import CatalogStore, connect
from pipeline.storage.event_log import LOG_COLLECTION, LOG_DB
from tests.conftest import REPO_ROOT, shared

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="checks processes through /proc")

# A process that starts (or reuses) the server, says so, and holds it until it is killed.
HOLDER = """
import sys, time
from pathlib import Path
from pipeline.processes.mongo_server import LocalMongoServer
server = LocalMongoServer(Path(sys.argv[1]), grace_s=float(sys.argv[2]))
print("ready", server.start(), flush=True)
time.sleep(600)
"""


def wait_until(predicate, timeout_s: float, what: str, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(every_s)


def hold(storage: Path, grace_s: float = GRACE_S) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(storage), str(grace_s)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("ready mongodb://"), line
    return proc


def kill9(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=10)
    if proc.stdout:
        proc.stdout.close()


def processes_on(storage: Path) -> list[int]:
    """Every live process whose command line names this storage folder (the guard and the server do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(storage).encode() in cmdline and process_start(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found


def logged_events(caplog, kind: str) -> list[int]:
    """The ``seq`` of each event of this kind that went to Python logging (the event is the record's argument)."""
    return [
        r.args["seq"]
        for r in caplog.records
        if r.name == "pipeline.events" and isinstance(r.args, dict) and r.args.get("kind") == kind
    ]


def gone(state: dict) -> bool:
    return not is_running(state["pid"], state["start"]) and not is_running(state["guard_pid"], state["guard_start"])


def assert_no_orphan(storage: Path, state: dict, timeout_s: float) -> None:
    wait_until(lambda: gone(state), timeout_s, f"the server {state['pid']} and its guard {state['guard_pid']} exit")
    assert not processes_on(storage.resolve()), "a process still runs on the storage folder"
    assert not (storage / "server.json").exists()


def test_a_clean_stop_of_the_last_user_stops_the_server_at_once(tmp_path):
    storage = tmp_path / "mongo"
    first, second = LocalMongoServer(storage), LocalMongoServer(storage)
    uri = first.start()
    state = read_state(storage)
    assert second.start() == uri, "a second user reuses the live server"
    assert first.server_pid == state["pid"]
    first.stop()
    assert is_running(state["pid"], state["start"]), "another user still holds a lease"
    second.stop()
    assert gone(state) and not (storage / "server.json").exists()
    assert not processes_on(storage.resolve())
    second.stop()  # twice is harmless


def test_kill_9_of_the_starter_the_next_start_reuses_the_server(tmp_path):
    storage = tmp_path / "mongo"
    holder = hold(storage)
    state = read_state(storage)
    assert state["guard_pid"] != holder.pid and state["pid"] != holder.pid
    kill9(holder)
    nxt = LocalMongoServer(storage)
    assert nxt.start() == state["uri"] and nxt.server_pid == state["pid"], "the same server, not a second one"
    store = CatalogStore(connect(nxt.uri, 3000))
    store.upsert_many([{"id": "p1", "name": "kept"}])
    assert store.get_many(["p1"])["p1"]["name"] == "kept"
    store.collection.database.client.close()
    nxt.stop()
    assert_no_orphan(storage, state, 1)  # the last user's clean stop: at once


def test_kill_9_of_the_only_user_the_server_exits_by_itself(tmp_path):
    storage = tmp_path / "mongo"
    holder = hold(storage, grace_s=0.5)
    state = read_state(storage)
    kill9(holder)
    assert_no_orphan(storage, state, 0.5 + 10)
    assert "no process has used it for 0.5 s" in (storage / "server.log").read_text()
    again = LocalMongoServer(storage)  # the data folder is fine for the next start
    assert again.start() and again.server_pid != state["pid"]
    again.stop()


def test_kill_9_of_an_ingest_halfway_the_next_pipeline_reuses_its_server(tmp_path, model_repo):
    """A real ``python -m pipeline ingest`` killed once its server runs: the next pipeline on the data folder takes
    the same server (no second one, no orphan), ingests, and its clean close stops the server at once."""
    from pipeline.ingestion.ingest import ingest as run_ingest

    data = tmp_path / "data"
    catalog = shared("seed_sample", "catalog.jsonl")
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "QDRANT_URL", "TRITON_URL")}
    env.update(DATA_DIR=str(data), MODEL_REPOSITORY=str(model_repo), HF_HUB_OFFLINE="1")
    ingest = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "ingest", str(catalog)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    storage = data / "mongo"
    try:
        state = wait_until(lambda: read_state(storage), 60, "the ingest starts its server", every_s=0.01)
    finally:
        kill9(ingest)
    assert ingest.returncode == -signal.SIGKILL
    with Pipeline(Settings(data_dir=data, model_repository=model_repo)) as pipe:
        assert pipe.mongo_uri == state["uri"] and pipe._mongo_server.server_pid == state["pid"]
        report = run_ingest(pipe, catalog, progress=False)
        assert not report.bad and pipe.store.count() == 10
    assert_no_orphan(storage, state, 1)


def test_a_deleted_data_folder_stops_the_server(tmp_path):
    data = tmp_path / "data"
    server = LocalMongoServer(data / "mongo")
    server.start()
    state = read_state(data / "mongo")
    shutil.rmtree(data)  # while a live process still holds its lease
    wait_until(lambda: gone(state), 20, "the server of a deleted folder exits")
    assert not processes_on((data / "mongo").resolve())
    server.stop()  # nothing left to stop, and no error


def test_two_processes_share_a_server_one_is_killed_the_other_still_works(tmp_path):
    storage = tmp_path / "mongo"
    grace = 0.5
    holder = hold(storage, grace_s=grace)  # the starter: the guard's parent
    state = read_state(storage)
    user = LocalMongoServer(storage, grace_s=grace)
    assert user.start() == state["uri"]
    client = connect(user.uri, 3000)
    client.t.c.insert_one({"_id": 1})
    kill9(holder)
    leases = storage / "leases"
    wait_until(lambda: len(list(leases.iterdir())) == 1, 10, "the guard drops the killed process's lease")
    time.sleep(grace + 4 * mongo_guard.TICK_S)  # longer than the grace period: it must still run
    assert is_running(state["pid"], state["start"]) and is_running(state["guard_pid"], state["guard_start"])
    client.t.c.insert_one({"_id": 2})
    assert client.t.c.count_documents({}) == 2
    client.close()
    user.stop()
    assert_no_orphan(storage, state, 1)


def test_a_killed_server_is_restarted_on_the_same_port_and_clients_reconnect(tmp_path):
    storage = tmp_path / "mongo"
    server = LocalMongoServer(storage)
    uri = server.start()
    state = read_state(storage)
    store = CatalogStore(connect(uri, 1000))
    store.upsert_many([{"id": "a", "name": "before"}])
    try:
        assert signal_process(state["pid"], state["start"], signal.SIGKILL)
        restarted = wait_until(
            lambda: (s := read_state(storage)) and s["pid"] != state["pid"] and s, 20, "the guard restarts the server"
        )
        assert restarted["uri"] == uri and restarted["guard_pid"] == state["guard_pid"]

        def answers():
            try:
                store.upsert_many([{"id": "b", "name": "after"}])
                return store.get_many(["b"])
            except Exception:
                return None

        assert wait_until(answers, 10, "the same client works again")["b"]["name"] == "after"
        assert "restarting it on port" in (storage / "server.log").read_text()
    finally:
        store.collection.database.client.close()
        server.stop()
    assert_no_orphan(storage, restarted, 1)


def test_the_pipeline_rides_out_a_killed_server(tmp_path, model_repo, caplog):
    """The app's own process throughout: the server dies (its guard paused, so the outage lasts), queries answer from
    the index with a warning and events go to Python logging; the guard restarts the server, and the store and the
    event log use MongoDB again by themselves, with every event in exactly one place."""
    from pipeline.ingestion.ingest import ingest

    settings = Settings(data_dir=tmp_path / "data", model_repository=model_repo, mongo_timeout_ms=500)
    pipe = Pipeline(settings)
    state = None
    try:
        ingest(pipe, shared("seed_sample", "catalog.jsonl"), progress=False)
        pipe.events._retry_s = (0.1, 0.5)  # probe often: the test waits for the log to come back
        assert not pipe.matcher.match_text("beige headphones").warnings
        pipe.events.write("probe", seq=0)
        pipe.events.flush()
        state = read_state(settings.mongo_path)
        caplog.set_level(logging.INFO, logger="pipeline.events")

        assert signal_process(state["guard_pid"], state["guard_start"], signal.SIGSTOP)
        try:
            assert signal_process(state["pid"], state["start"], signal.SIGKILL)
            wait_until(lambda: not is_running(state["pid"], state["start"]), 10, "the server dies")
            result = pipe.matcher.match_text("navy track jacket with gold stripes")
            assert result.matches and "details are unavailable" in result.warnings[0]
            pipe.events.write("probe", seq=1)
            pipe.events.flush()
            assert not pipe.events.to_mongo
        finally:
            signal_process(state["guard_pid"], state["guard_start"], signal.SIGCONT)

        seq = 1

        def back() -> bool:
            nonlocal seq
            seq += 1
            pipe.events.write("probe", seq=seq)
            pipe.events.flush()
            return pipe.events.to_mongo

        wait_until(back, 20, "the event log writes to MongoDB again", every_s=0.1)
        assert not pipe.matcher.match_text("navy track jacket with gold stripes").warnings
        pipe.events.flush()
        logs = pipe.mongo[LOG_DB][LOG_COLLECTION]
        stored = [d["seq"] for d in logs.find({"kind": "probe"})]
        logged = logged_events(caplog, "probe")
        assert sorted(stored + logged) == list(range(seq + 1)), (stored, logged)
        assert 0 in stored and 1 in logged and seq in stored
        assert logs.count_documents({"kind": "match"}) >= 2
        messages = [r.getMessage() for r in caplog.records if r.name == "pipeline.events"]
        assert any("does not answer" in m for m in messages) and any("answers again" in m for m in messages)
    finally:
        pipe.close()
    assert state and not processes_on(settings.mongo_path.resolve())


def test_a_pid_is_never_signalled_unless_it_is_the_recorded_process():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        start = process_start(sleeper.pid)
        assert not signal_process(sleeper.pid, start + 1, signal.SIGTERM), "same pid, another start time"
        assert sleeper.poll() is None
        assert signal_process(sleeper.pid, start, signal.SIGTERM)
        sleeper.wait(timeout=10)
        assert not is_running(sleeper.pid, start)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
