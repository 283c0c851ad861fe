"""``python -m pipeline triton``: Triton in the foreground on the model repository until Ctrl-C or SIGTERM.

The process itself (finding the install, starting, stopping, cleaning up) is ``pipeline.processes.triton``; this is
the command around it: its options, its messages and its signal handling.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..errors import PipelineError
from ..processes.triton import MODELS, TritonServer, relevant_log_lines


def serve(
    repo: Path,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    host: str = "127.0.0.1",
    ready_timeout: float = 120.0,
    log_path: Path | None = None,
) -> int:
    """``python -m pipeline triton``: run the server in the foreground until Ctrl-C/SIGTERM; returns the exit status.

    Raises ``PipelineError`` (TritonNotInstalled / TritonStartError) when it cannot start.
    """
    log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"pipeline-triton-{http_port}.log"
    server = TritonServer(
        repo, http_port, grpc_port, metrics_port, host=host, log_path=log_path, ready_timeout=ready_timeout
    )
    stopping = threading.Event()

    def _interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # while starting: abort the wait; start() stops the half-started server

    def _stop(signum: int, _frame: object) -> None:
        stopping.set()  # once serving: leave the loop below, then stop() in order

    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"Starting Triton on {Path(repo)} (log: {log_path}) ...", flush=True)
        started = time.monotonic()
        try:
            server.start()
        except KeyboardInterrupt:
            print("Interrupted before Triton was ready; stopped it.", file=sys.stderr)
            return 130
        for sig in previous:
            signal.signal(sig, _stop)
        print(
            f"Triton is ready at {server.url} (gRPC {host}:{server.grpc_port}, metrics "
            f"http://{host}:{server.metrics_port}/metrics) after {time.monotonic() - started:.1f} s; "
            f"serving {', '.join(MODELS)}. Ctrl-C stops it.",
            flush=True,
        )
        while not stopping.wait(0.5):
            code = server.process.poll() if server.process else -1
            if code is not None:
                lines = "\n  ".join(relevant_log_lines(server.log_text()))
                print(
                    f"error: tritonserver exited unexpectedly (code {code}). Its log says:\n  {lines}", file=sys.stderr
                )
                return 2
        print("Stopping Triton ...", flush=True)
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m pipeline triton``."""
    from ..settings import Settings

    parser.add_argument(
        "--model-repository",
        type=Path,
        default=Settings.from_env().model_repository,
        help="model repository written by build-model (default: $MODEL_REPOSITORY or model_repository)",
    )
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for both models")
    parser.add_argument("--log-file", type=Path, default=None, help="where Triton's log goes (default: a temp file)")


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point for the CLI subcommand: clear one-paragraph errors, exit status 2 (as every command) on failure."""
    try:
        return serve(
            args.model_repository,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            host=args.host,
            ready_timeout=args.ready_timeout,
            log_path=args.log_file,
        )
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
