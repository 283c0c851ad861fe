"""The app's own settings (server, share link, login, concurrency) on top of ``pipeline.settings.Settings``, parsed by
the same functions and failing with the same ``SettingsError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from pipeline.settings import SettingsError, env_flag, env_int


def _auth(env: Mapping[str, str]) -> tuple[str, str] | None:
    raw = env.get("GRADIO_AUTH", "").strip()
    if not raw:
        return None
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise SettingsError("GRADIO_AUTH must look like user:password (both parts non-empty).")
    return user, password


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
            f"default_top_k={self.default_top_k})"
        )
