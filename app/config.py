"""The app's own settings (server, share link, login, concurrency) on top of ``pipeline.settings.Settings``, parsed by
the same functions and failing with the same ``SettingsError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from pipeline.settings import SettingsError, env_choice, env_flag, env_int

RATE_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0}
METRICS_MODES = ("admin", "1", "0")  # behind ADMIN_TOKEN (default), open to all, off


def _auth(env: Mapping[str, str]) -> tuple[str, str] | None:
    raw = env.get("GRADIO_AUTH", "").strip()
    if not raw:
        return None
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise SettingsError("GRADIO_AUTH must look like user:password (both parts non-empty).")
    return user, password


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list; blanks around and between the commas are ignored."""
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    origins = _list(env, "CORS_ORIGINS")
    for origin in origins:
        scheme, sep, host = origin.partition("://")
        if origin == "*":
            continue
        if scheme not in ("http", "https") or not sep or not host or "/" in host or any(c.isspace() for c in host):
            raise SettingsError(
                f"CORS_ORIGINS has {origin!r}: list origins as scheme://host[:port] (e.g. https://shop.example), "
                "comma-separated, or * for any."
            )
    return origins


def _rate(env: Mapping[str, str]) -> tuple[int, float] | None:
    """``API_RATE_LIMIT`` as (requests, seconds): ``20/s``, ``600/min``, ``10000/h``; unset: no limit."""
    raw = env.get("API_RATE_LIMIT", "").strip().lower()
    if not raw:
        return None
    count, sep, unit = raw.partition("/")
    period = RATE_PERIODS.get(unit.strip())
    if not sep or period is None or not count.strip().isdigit() or int(count) < 1:
        raise SettingsError(
            f"API_RATE_LIMIT={raw!r} is not understood: use requests per second, minute or hour, e.g. 20/s, 600/min."
        )
    return int(count), period


@dataclass(frozen=True)
class AppConfig:
    # Loopback unless asked, so that a page started on a laptop is not offered to the network (the container asks).
    server_name: str = "127.0.0.1"
    server_port: int = 7860
    share: bool = False
    auth: tuple[str, str] | None = None
    # Events the queue runs at once: the pipeline's parts are thread-safe, so this only bounds CPU use and memory.
    concurrency: int = 4
    queue_size: int = 64
    default_top_k: int = 8
    title: str = "Product matcher"
    # The REST API (app/api): keys for its search endpoints, the origins browsers may call it from, a per-client rate
    # limit (requests, seconds), and who may read /metrics ("admin": with ADMIN_TOKEN, "1": anyone, "0": nobody).
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    rate_limit: tuple[int, float] | None = None
    metrics: str = "admin"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AppConfig:
        env = os.environ if env is None else env
        return cls(
            server_name=env.get("GRADIO_SERVER_NAME", "").strip() or "127.0.0.1",
            server_port=env_int(env, "GRADIO_SERVER_PORT", 7860, 1, 65535),
            share=env_flag(env, "GRADIO_SHARE"),
            auth=_auth(env),
            concurrency=env_int(env, "GRADIO_CONCURRENCY", 4, 1, 64),
            queue_size=env_int(env, "GRADIO_QUEUE_SIZE", 64, 1, 10_000),
            default_top_k=env_int(env, "APP_TOP_K", 8, 1, 100),
            api_keys=_list(env, "API_KEYS"),
            cors_origins=_origins(env),
            rate_limit=_rate(env),
            metrics=env_choice(env, "METRICS", "admin", METRICS_MODES),
        )

    def public_warning(self) -> str | None:
        """The sentence logged when the page would be public with no login (a share link is reachable by anyone)."""
        if self.share and self.auth is None:
            return (
                "GRADIO_SHARE=1 without GRADIO_AUTH: anyone who has the share link can search, and use the Catalogue "
                "tab's admin token prompt; set GRADIO_AUTH=user:password to require a login."
            )
        return None

    def with_(self, **changes: object) -> AppConfig:
        return replace(self, **changes)

    def __repr__(self) -> str:  # never print the password
        auth = None if self.auth is None else (self.auth[0], "***")
        return (
            f"AppConfig(server_name={self.server_name!r}, server_port={self.server_port}, share={self.share}, "
            f"auth={auth}, concurrency={self.concurrency}, queue_size={self.queue_size}, "
            f"default_top_k={self.default_top_k}, api_keys={len(self.api_keys)} set, "
            f"cors_origins={self.cors_origins}, rate_limit={self.rate_limit}, metrics={self.metrics!r})"
        )
