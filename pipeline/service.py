"""The pipeline's parts, wired once from ``Settings``; shared by the command line, the app, tests and benchmarks.

Parts are created on first use (a ``status`` call should not load a model; a page load should not start inference) and
creation is locked, so Gradio's worker threads can share one ``Pipeline``. ``close()`` stops what this object started.
"""

from __future__ import annotations

import contextlib
import threading

from .settings import Settings


class Pipeline:
    def __init__(self, settings: Settings | None = None, serving: bool = False) -> None:
        """``serving``: this process answers queries (the app), so index optimisations must not stall it."""
        self.settings = settings or Settings.from_env()
        self.serving = serving
        self._lock = threading.RLock()
        self._part_locks: dict[str, threading.RLock] = {}
        self._mongo_server = None
        self._closed = False
        self.on_batch = None  # set before the first query: told of every batched tower run (tower, rows)

    # Every part goes through _once so that two threads asking at the same time build it only once; each part has a
    # lock of its own, so building one (starting MongoDB) does not hold up another (loading the model) meanwhile.
    def _once(self, name: str, make):
        part = self.__dict__.get(name)
        if part is not None:
            return part
        with self._lock:
            lock = self._part_locks.setdefault(name, threading.RLock())
        with lock:
            if name not in self.__dict__:
                self.__dict__[name] = make()
            return self.__dict__[name]

    @property
    def mongo_uri(self) -> str:
        def make() -> str:
            if self.settings.mongodb_uri:
                return self.settings.mongodb_uri
            from .processes.mongo_server import LocalMongoServer

            self._mongo_server = LocalMongoServer(self.settings.mongo_path)
            return self._mongo_server.start()

        return self._once("_mongo_uri", make)

    @property
    def mongo_mode(self) -> str:
        return "MongoDB at MONGODB_URI" if self.settings.mongodb_uri else "local MongoDB-protocol server (secantusdb)"

    @property
    def mongo(self):
        from .storage.catalog_store import connect

        return self._once("_mongo", lambda: connect(self.mongo_uri, self.settings.mongo_timeout_ms))

    @property
    def store(self):
        from .storage.catalog_store import CatalogStore

        return self._once("_store", lambda: CatalogStore(self.mongo))

    @property
    def listing(self):
        """The catalogue in id order, for browsing (the Catalogue tab): read from the index once per version."""
        from .storage.catalog_listing import CatalogListing

        return self._once("_listing", lambda: CatalogListing(self.index, self.store))

    @property
    def events(self):
        from .storage.event_log import EventLog

        def make():
            try:
                client = self.mongo
            except Exception:
                client = None
            return EventLog(client)

        return self._once("_events", make)

    @property
    def index(self):
        from .storage.vectors import open_vector_store

        return self._once("_index", lambda: open_vector_store(self.settings, serving=self.serving))

    @property
    def photos(self):
        from .storage.photos import PhotoStore

        return self._once("_photos", lambda: PhotoStore(self.settings.photos_path))

    @property
    def cache(self):
        from .storage.result_cache import ResultCache

        return self._once("_cache", lambda: ResultCache(self.settings.cache_path, self.settings.cache_size_mb))

    @property
    def encoder(self):
        from .query.encoder import load_encoder

        return self._once("_encoder", lambda: load_encoder(self.settings, self.serving, self.on_batch))

    @property
    def card(self):
        return self.encoder.card

    @property
    def matcher(self):
        from .query.matcher import Matcher

        return self._once("_matcher", lambda: Matcher(self))

    def started(self, name: str) -> bool:
        return f"_{name}" in self.__dict__

    def close(self) -> None:
        """Stop in dependency order: flush events while Mongo still runs, then the clients, then the server."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for name in ("_events", "_encoder", "_index", "_cache", "_mongo"):
                part = self.__dict__.pop(name, None)
                if part is not None:
                    # Closing must go on for the remaining parts whatever one of them raises.
                    with contextlib.suppress(Exception):
                        part.close()
            if self._mongo_server is not None:
                self._mongo_server.stop()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
