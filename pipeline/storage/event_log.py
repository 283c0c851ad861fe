"""Event log in ``log_db.system_logs``: every match and error, written off the request path.

A background thread drains a bounded queue, so a slow or dead MongoDB never delays a query. When Mongo cannot take an
event it goes to Python logging instead (once, with the reason), never back into the queue. Events hold timings, ids and
error text, never raw images or vectors.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

LOG_DB = "log_db"
LOG_COLLECTION = "system_logs"
logger = logging.getLogger("pipeline.events")


class EventLog:
    def __init__(self, client: MongoClient | None, max_queue: int = 10_000) -> None:
        self.collection = client[LOG_DB][LOG_COLLECTION] if client is not None else None
        self._queue: queue.Queue[dict | None] = queue.Queue(max_queue)
        self.dropped = 0
        self.fallbacks = 0
        self._thread = threading.Thread(target=self._drain, name="event-log", daemon=True)
        self._thread.start()

    def write(self, kind: str, **fields: Any) -> None:
        event = {"time": dt.datetime.now(dt.UTC), "kind": kind, **fields}
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def _drain(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                self._store(event)
            finally:
                self._queue.task_done()

    def _store(self, event: dict) -> None:
        if self.collection is not None:
            try:
                self.collection.insert_one(event)
                return
            except PyMongoError as err:
                event = {**event, "log_error": str(err).split(",")[0][:200]}
        self.fallbacks += 1
        event.pop("_id", None)
        level = logging.WARNING if event.get("kind") == "error" else logging.INFO
        logger.log(level, "event %s", {k: v for k, v in event.items() if k != "time"})

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until queued events are stored (tests and shutdown)."""
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        done.wait(timeout)

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5)
