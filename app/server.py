"""``python -m app``: one ``Pipeline`` from the environment, warmed up, served by Gradio until SIGINT/SIGTERM, closed.

The share link (``GRADIO_SHARE=1``) needs the internet and Gradio's tunnel binary. Before asking Gradio for one, a short
probe of Gradio's share server decides whether it can work at all; when it cannot, one log line says so and the page is
served locally only, without the long retries and multi-line advice Gradio would print.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.processes.data_dir import hold_data_dir
from pipeline.service import Pipeline
from pipeline.settings import Settings, SettingsError

from . import handlers as h
from .config import AppConfig

log = logging.getLogger("app")
SHARE_PROBE_TIMEOUT_S = 5.0


def warm_up(pipe: Pipeline) -> list[str]:
    """Load the model and open every part before the first visitor comes; returns the problems the page should show.

    Without a model or an inference backend nothing can be answered: those errors propagate and the app stops with
    their sentence. Problems with the index or MongoDB are logged and shown in the status line, and the app serves
    anyway: parts are created on first use, so a query after the problem is fixed (an ingest that held the local
    index folder has finished, MongoDB is back) works, and until then each query says what is wrong.
    """
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    started = time.perf_counter()
    # MongoDB and the vector store open while the model loads: the local MongoDB server is slow to start.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="warm-up") as pool:
        stores = [pool.submit(lambda: pipe.store.ping()), pool.submit(lambda: pipe.index.count())]
        card = pipe.card  # the model card, the preprocessors and the inference backend (ModelNotFound: fatal)
        for future in stores:
            future.exception()  # waited for; their errors are reported below
    pipe.encoder.encode_texts(["warm-up"])
    pipe.encoder.encode_images([Image.new("RGB", (card.image_size, card.image_size))])
    problems: list[str] = []
    try:
        pipe.index.check_model(card)
        if pipe.index.count() == 0:
            problems.append(h.EMPTY_CATALOGUE)
    except PipelineError as err:
        problems.append(str(err))
    try:
        pipe.store.ping()
    except PipelineError as err:
        problems.append(str(err))
    pipe.cache  # noqa: B018 (opens the result cache now rather than on the first query)
    for problem in problems:
        log.warning("%s", problem)
    log.info("Warmed up in %.1f s: %s, %s", time.perf_counter() - started, card.label, pipe.encoder.backend.description)
    return problems


def share_unavailable_reason(timeout_s: float = SHARE_PROBE_TIMEOUT_S) -> str | None:
    """Why a Gradio share link cannot work from here, or None when Gradio's share server answers."""
    import httpx
    from gradio import networking

    if os.environ.get("GRADIO_SHARE_SERVER_ADDRESS"):
        return None  # a self-hosted FRP server: let Gradio try it
    try:
        response = httpx.get(networking.GRADIO_API_SERVER, timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError as err:
        return f"Gradio's share server {networking.GRADIO_API_SERVER} cannot be reached ({type(err).__name__}: {err})"
    return None


def launch_options(config: AppConfig, settings: Settings) -> dict:
    """Everything ``demo.launch`` gets, apart from ``share`` (decided by ``serve``)."""
    from .ui import CSS

    return {
        "server_name": config.server_name,
        "server_port": config.server_port,
        "auth": config.auth,
        "auth_message": "Log in to use the product matcher." if config.auth else None,
        # Only the photo store may be served (every ingest copies the photos there); uploads live in Gradio's own
        # upload folder.
        "allowed_paths": [str(settings.photos_path.resolve())],
        # Photos for queries are small; a catalogue zip is not, but only an admin can import one.
        "max_file_size": int(max(settings.max_image_mb, settings.max_upload_mb if settings.admin_token else 0) * 2**20),
        "show_error": False,  # handlers turn every error into a gr.Error with a sentence for people
        "ssr_mode": False,
        "mcp_server": False,
        "pwa": False,
        "enable_monitoring": False,
        "css": CSS,
        "quiet": True,
        "prevent_thread_lock": True,
    }


def static_paths(settings: Settings) -> list[Path]:
    """What Gradio serves from where it lies: the photo store (photos are stored by content, so a file never changes
    under its name) and the placeholder. Without this every answer's gallery has Gradio check, hash and copy each photo
    into its cache again (bench.gradio_path: most of what our answer cost on the Gradio path)."""
    return [settings.photos_path.resolve(), h.PLACEHOLDER_PHOTO]


def serve(pipe: Pipeline, config: AppConfig):
    """Build the page for ``pipe`` and start serving it (returns at once); returns the launched ``gr.Blocks``."""
    from . import endpoints as e
    from .api import RestApi, build_api, serving_app
    from .api.metrics import observe_batch
    from .catalogue import CatalogueManager
    from .ui import build_demo

    pipe.on_batch = observe_batch  # before the model loads: every tower run's rows go to /metrics
    problems = warm_up(pipe)
    pipe.settings.photos_path.mkdir(parents=True, exist_ok=True)
    info = h.page_info(pipe, problems)
    manager = CatalogueManager(pipe)  # one for the page and the REST API: one import at a time, one gate
    demo = build_demo(pipe, config, info, manager)
    # The REST API on the same server and port, in front of Gradio's own routes (app/api/__init__.py says why).
    rest = build_api(RestApi(pipe, config, manager, e.Search(pipe, list(info.problems), info)))
    share = False
    if config.public_warning():
        log.warning("%s", config.public_warning())
    if config.share:
        reason = share_unavailable_reason()
        if reason:
            log.warning("GRADIO_SHARE=1 but no share link can be made here: %s. Serving locally only.", reason)
        share = reason is None
    import gradio as gr

    gr.set_static_paths(static_paths(pipe.settings))
    demo.launch(share=share, _app=serving_app(rest), **launch_options(config, pipe.settings))
    if share and not demo.share_url:
        log.warning("GRADIO_SHARE=1 but Gradio could not create a share link (see above). Serving locally only.")
    where = f"http://{config.server_name}:{config.server_port}/"
    log.info(
        "Serving the product matcher at %s%s%s (concurrency %d); REST API at %sapi/v1 (%s)",
        where,
        f" and {demo.share_url}" if demo.share_url else "",
        " with login" if config.auth else "",
        config.concurrency,
        where,
        api_access(config),
    )
    return demo


def api_access(config: AppConfig) -> str:
    """Who may search through the REST API, in the words of the start-up line."""
    if config.api_keys:
        return f"searching needs one of {len(config.api_keys)} API keys"
    if config.auth:
        return "searching needs the page's login"
    return "searching open to all"


def _stop(signum, frame):  # SIGTERM ends the app like Ctrl-C: the finally blocks close the server and the pipeline
    raise KeyboardInterrupt


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = AppConfig.from_env()
        settings = Settings.from_env()
    except SettingsError as err:
        print(f"app: {err}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    try:
        held = hold_data_dir(settings.data_dir)  # before anything is opened: a second app stops here
    except PipelineError as err:
        log.error("%s", err)
        return 2
    pipe = Pipeline(settings, serving=True)
    demo = None
    try:
        demo = serve(pipe, config)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        log.info("Stopping.")
        return 0
    except PipelineError as err:
        log.error("%s", err)
        return 2
    except OSError as err:  # e.g. the port is taken
        log.error("Cannot serve the page on %s:%s: %s", config.server_name, config.server_port, err)
        return 2
    finally:
        stopping = time.perf_counter()
        if demo is not None:
            demo.close()
        closed_page = time.perf_counter()
        pipe.close()
        held.close()
        log.info("Stopped (page %.1f s, pipeline %.1f s).", closed_page - stopping, time.perf_counter() - closed_page)
