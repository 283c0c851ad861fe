"""Event log in ``log_db.system_logs``: every match and error, written off the request path.

A background thread drains a bounded queue, so a slow or dead MongoDB never delays a query: ``write()`` only puts the
event in the queue (when the queue is full the event is counted in ``dropped``, never waited for). The thread waits
``linger_s`` after an event for the ones that follow and inserts them together (up to ``BATCH_MAX`` in one
``insert_many``): on a busy server one round trip and one journal commit serve several queries. An event reaches MongoDB
at most ``linger_s`` later for it.

While MongoDB answers, each event is inserted there. When an insert fails, that event goes to Python logging (logger
``pipeline.events``, with the reason in ``log_error``) and so does every later one, without trying MongoDB, until the
thread's next probe (a ``ping`` bounded by ``PROBE_TIMEOUT_S``, first ``RETRY_S[0]`` seconds after the failure, then
backing off to one every ``RETRY_S[1]`` seconds) finds MongoDB answering again; from then on events are inserted again,
in the same process, with no restart. One warning says when MongoDB is lost and one when it is back.

Each event is stored exactly once, in MongoDB or in the log, never queued again; an insert MongoDB acknowledged is on
disk (journaled: it survives a ``kill -9`` of the server). The one exception: an insert that fails after MongoDB may
already have taken it (the connection broke between the write and its reply) is logged too, marked ``log_error``, so
such an event can be in both places, never lost. With no client at all (MongoDB could not be
reached when the pipeline started) every event goes to the log. Events hold timings, ids and error text, never raw
images or vectors.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from typing import Any

import pymongo
from bson.errors import InvalidDocument
from pymongo import MongoClient, WriteConcern
from pymongo.errors import BulkWriteError, PyMongoError

LOG_DB = "log_db"
LOG_COLLECTION = "system_logs"
RETRY_S = (0.5, 30.0)  # first and longest wait between probes while MongoDB is down
PROBE_TIMEOUT_S = 1.0
LINGER_S = 0.1  # how long the thread collects events before one insert: how late an event may reach MongoDB
BATCH_MAX = 100
logger = logging.getLogger("pipeline.events")


def _reason(err: Exception) -> str:
    return str(err).split(",")[0][:200]


class EventLog:
    def __init__(
        self,
        client: MongoClient | None,
        max_queue: int = 10_000,
        retry_s: tuple[float, float] = RETRY_S,
        linger_s: float = LINGER_S,
    ) -> None:
        # j=True: an event MongoDB acknowledged is on disk, even if the server is killed right after (one journal
        # commit a batch, on this thread, not the caller's).
        self.collection = (
            client[LOG_DB].get_collection(LOG_COLLECTION, write_concern=WriteConcern(j=True))
            if client is not None
            else None
        )
        self._queue: queue.Queue[dict | None] = queue.Queue(max_queue)
        self.dropped = 0  # events refused because the queue was full
        self.fallbacks = 0  # events written to Python logging instead of MongoDB
        self.stored = 0  # events inserted into MongoDB
        self._retry_s = retry_s
        self._linger_s = linger_s
        self._hurry = threading.Event()  # set while someone waits in flush(): no lingering then
        self._backoff = retry_s[0]
        self._down_since: float | None = None  # monotonic time of the failure that sent events to the log
        self._retry_at = 0.0
        self._thread = threading.Thread(target=self._drain, name="event-log", daemon=True)
        self._thread.start()

    @property
    def to_mongo(self) -> bool:
        """Whether events go to MongoDB now (False while it is down, until a probe finds it back)."""
        return self.collection is not None and self._down_since is None

    def write(self, kind: str, **fields: Any) -> None:
        event = {"time": dt.datetime.now(dt.UTC), "kind": kind, **fields}
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def _drain(self) -> None:
        while True:
            batch = [self._queue.get()]
            if batch[0] is not None and self._linger_s > 0:
                self._hurry.wait(self._linger_s)
            while len(batch) < BATCH_MAX and batch[-1] is not None:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [e for e in batch if e is not None]
            try:
                if events:
                    self._store(events)
            except Exception:  # the thread must live on whatever one batch does
                logger.exception("event log: could not write %d events", len(events))
            finally:
                for _ in batch:
                    self._queue.task_done()
            if batch[-1] is None:
                return

    def _store(self, events: list[dict]) -> None:
        failed: dict[int, str] = {}
        if self.collection is not None and self._mongo_usable():
            try:
                # Copies: insert_many adds an _id to the documents it gets. Unordered: one bad event stops no other.
                self.collection.insert_many([dict(e) for e in events], ordered=False)
                self.stored += len(events)
                return
            except BulkWriteError as err:  # MongoDB answered: only the events it names were refused
                failed = {e["index"]: str(e.get("errmsg") or "refused")[:200] for e in err.details["writeErrors"]}
                self.stored += len(events) - len(failed)
            except InvalidDocument:  # one event BSON cannot hold: each on its own, so only that one is logged
                if len(events) > 1:
                    for event in events:
                        self._store([event])
                    return
                failed = {0: "not storable in MongoDB"}
            except PyMongoError as err:  # no answer: any of them may have been taken, so every one is logged
                reason = _reason(err)
                failed = dict.fromkeys(range(len(events)), reason)
                self._lost(reason)
            events = [{**events[i], "log_error": why} for i, why in sorted(failed.items())]
        for event in events:
            self.fallbacks += 1
            level = logging.WARNING if event.get("kind") == "error" else logging.INFO
            logger.log(level, "event %s", {k: v for k, v in event.items() if k not in ("time", "_id")})

    def _lost(self, reason: str) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._backoff = self._retry_s[0]
            logger.warning("event log: MongoDB does not answer (%s); events go to Python logging until it does", reason)
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, self._retry_s[1])

    def _mongo_usable(self) -> bool:
        """True while MongoDB is up; while it is down, True once a due probe finds it answering again."""
        if self._down_since is None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        assert self.collection is not None
        try:
            with pymongo.timeout(PROBE_TIMEOUT_S):
                self.collection.database.command("ping")
        except PyMongoError as err:
            self._lost(_reason(err))
            return False
        logger.warning(
            "event log: MongoDB answers again after %.1f s; events go to %s.%s again",
            time.monotonic() - self._down_since,
            LOG_DB,
            LOG_COLLECTION,
        )
        self._down_since = None
        self._backoff = self._retry_s[0]
        return True

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until queued events are stored (tests and shutdown); a batch being collected goes at once."""
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        self._hurry.set()
        try:
            done.wait(timeout)
        finally:
            self._hurry.clear()

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5)
