"""Triton's process: the real ``tritonserver`` from the ``nvidia-pytriton`` wheel, started on our model repository.

It runs from its own venv (``.venv-triton``, made by ``scripts/setup_triton_venv.sh``) because nvidia-pytriton pins
numpy<2 while the app needs numpy>=2. Starting it by hand has three traps, handled here and nowhere else (see the
"Triton" section of docs/operations.md): (1) the Python backend needs a backend folder holding the stub built for the
venv's Python; (2) ``LD_LIBRARY_PATH`` must start with that Python's LIBDIR and include ``nvidia_pytriton.libs``;
(3) the venv's ``bin/`` must come first on ``PATH``. The server gets a process session of its own, so that stopping it
takes the backend stubs too, and a unique shared-memory prefix, so that a killed server's segments can be removed.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from ..errors import PipelineError
from ..model_repo import TEXT_MODEL, VISUAL_MODEL
from .ports import free_port
from .stopping import kill_group, stop_child

ROOT = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = "scripts/setup_triton_venv.sh"
MODELS = (TEXT_MODEL, VISUAL_MODEL)

log = logging.getLogger(__name__)
#: Python-backend shared memory per model instance: big enough that the region does not have to grow while a batch
#: of images is copied in, which is slow.
DEFAULT_SHM_BYTES = 32 * 1024 * 1024
MIN_SHM_BYTES = 1024 * 1024  # the Python backend's own default; its regions grow from there as batches need


def fitting_shm_bytes(models: int, shm: Path = Path("/dev/shm"), wanted: int = DEFAULT_SHM_BYTES) -> int:
    """Shared memory per Python-backend model that this machine's ``/dev/shm`` can give: ``wanted``, or a quarter of
    the free space per model where that is less. Containers get a small ``/dev/shm`` by default (Docker, podman,
    Hugging Face Spaces), where models asking for more than it has fail to load and the app serves in-process."""
    try:
        stat = os.statvfs(shm)
    except OSError:
        return wanted
    free = stat.f_bavail * stat.f_frsize
    return max(MIN_SHM_BYTES, min(wanted, free // (4 * max(1, models))))


#: servers started by this process and not stopped yet (strong refs): stopped at interpreter exit so none outlives it
_LIVE: set[TritonServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        server.stop()


class TritonNotInstalled(PipelineError):
    """The Triton venv, the nvidia-pytriton wheel in it, or the stub for its Python version is missing."""


class TritonStartError(PipelineError):
    """tritonserver exited or did not get both models ready in time; the message carries the relevant log lines."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the bundled server are, found once per venv."""

    venv: Path
    binary: Path
    backend_src: Path  # pytriton/tritonserver/backends/python
    stub: Path  # python_backend_stubs/<X.Y>/triton_python_backend_stub
    libs: Path  # nvidia_pytriton.libs (libcudart & co. that the stub links against)
    libdir: str  # LIBDIR of the venv's interpreter (its libpython)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment tritonserver needs (traps 2 and 3)."""
        env = dict(os.environ if base is None else base)
        for key in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
            env.pop(key, None)  # the app's venv must not leak into the stub's interpreter
        old_ld = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (self.libdir, str(self.libs), old_ld) if p)
        env["PATH"] = os.pathsep.join(p for p in (str(self.venv / "bin"), env.get("PATH", "")) if p)
        env["VIRTUAL_ENV"] = str(self.venv)
        return env


def triton_venv() -> Path:
    """``TRITON_VENV`` (read by ``pipeline.settings``), else ``<repo root>/.venv-triton``."""
    from ..settings import Settings

    return Settings.from_env().triton_venv or ROOT / ".venv-triton"


@functools.lru_cache(maxsize=4)
def _find_install_cached(venv: Path) -> TritonInstall:
    python = venv / "bin" / "python"
    if not python.exists():
        raise TritonNotInstalled(
            f"No Triton venv at {venv}: create it with '{SETUP_SCRIPT}' (or point TRITON_VENV at one)."
        )
    probe = (
        "import json, sys, sysconfig, importlib.util as u; s = u.find_spec('pytriton');"
        "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], 'libdir': sysconfig.get_config_var('LIBDIR'),"
        "'pytriton': list(s.submodule_search_locations) if s else None}))"
    )
    try:
        out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout
        info = json.loads(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise TritonNotInstalled(
            f"The Triton venv at {venv} does not run ({exc}); recreate it with '{SETUP_SCRIPT}'."
        ) from None
    if not info["pytriton"]:
        raise TritonNotInstalled(f"The Triton venv at {venv} lacks nvidia-pytriton; run '{SETUP_SCRIPT}'.")
    pkg = Path(info["pytriton"][0])
    server_dir = pkg / "tritonserver"
    install = TritonInstall(
        venv=venv,
        binary=server_dir / "bin" / "tritonserver",
        backend_src=server_dir / "backends" / "python",
        stub=server_dir / "python_backend_stubs" / info["version"] / "triton_python_backend_stub",
        libs=pkg.parent / "nvidia_pytriton.libs",
        libdir=info["libdir"] or "",
    )
    for what, path in (("tritonserver binary", install.binary), ("Python backend", install.backend_src)):
        if not path.exists():
            raise TritonNotInstalled(
                f"The nvidia-pytriton wheel in {venv} has no {what} ({path}); run '{SETUP_SCRIPT}'."
            )
    if not install.stub.exists():
        raise TritonNotInstalled(
            f"nvidia-pytriton has no Python-backend stub for Python {info['version']} (the Triton venv's interpreter); "
            f"recreate {venv} with Python 3.11 ({SETUP_SCRIPT})."
        )
    return install


def find_install(venv: Path | None = None) -> TritonInstall:
    """Locate the bundled server in the Triton venv, or raise ``TritonNotInstalled`` naming the setup script."""
    return _find_install_cached(Path(venv or triton_venv()).resolve())


def _check_port_free(host: str, port: int, what: str) -> None:
    """Fail with a clear sentence before Triton does it in its log (Triton itself also binds with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            option = "--" + what.lower() + "-port"
            raise TritonStartError(
                f"Port {port} on {host} ({what}) is already in use ({exc.strerror}); choose another with {option}."
            ) from None


_ERROR_LINE = re.compile(r"^E\d{4} |^error:", re.IGNORECASE)
_WARNING_LINE = re.compile(r"error|failed|traceback|exception|unable|address already in use", re.IGNORECASE)
_HARMLESS = re.compile(r"cuda|nvml|dcgm|pinned memory|gpu metrics", re.IGNORECASE)
_ALWAYS = re.compile(r"error while loading shared libraries|cannot open shared object", re.IGNORECASE)


def _harmless(line: str) -> bool:
    return bool(_HARMLESS.search(line)) and not _ALWAYS.search(line)


def relevant_log_lines(text: str, limit: int = 6, width: int = 400) -> list[str]:
    """The log lines worth showing a person when the server fails.

    Triton's own error lines (``E....`` and the final ``error: ...``) first, without the Python tracebacks that Triton
    repeats on each of them; failing those, anything that reads like an error; never the CPU-only CUDA/NVML noise.
    """
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    picked = [line for line in lines if (_ERROR_LINE.search(line) or _ALWAYS.search(line)) and not _harmless(line)]
    if not picked:
        picked = [line for line in lines if _WARNING_LINE.search(line) and not _harmless(line)] or lines
    out: list[str] = []
    for line in picked:
        line = line.split("\\n\\nAt:", 1)[0]  # Triton escapes the traceback into the same line
        if len(line) > width:
            line = line[: width - 3] + "..."
        if line not in out:
            out.append(line)
    return out[-limit:]


class TritonServer:
    """A tritonserver process on ``repo`` serving clip_text and clip_visual; use as a context manager.

    Ports left as None are picked free on ``host``. ``start()`` returns once both models are ready, or raises
    ``TritonStartError`` (with Triton's relevant log lines) / ``TritonNotInstalled``; it never hangs past
    ``ready_timeout``.
    """

    def __init__(
        self,
        repo: Path,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        ready_timeout: float = 120.0,
        stop_timeout: float = 15.0,
        shm_bytes: int | None = None,  # None: fitted to /dev/shm when the server starts
        venv: Path | None = None,
        models: tuple[str, ...] = MODELS,
    ) -> None:
        self.repo = Path(repo).resolve()
        self.host = host
        self.requested_ports = {"HTTP": http_port, "GRPC": grpc_port, "Metrics": metrics_port}
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.log_path = Path(log_path) if log_path else None
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.requested_shm = shm_bytes
        self.shm_bytes = shm_bytes or DEFAULT_SHM_BYTES
        self.venv = venv
        self.models = models
        self.process: subprocess.Popen | None = None
        self._workdir: Path | None = None
        self._log_file = None
        self._shm_prefix = ""
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- info
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def log_text(self) -> str:
        path = self._current_log()
        try:
            return path.read_text(errors="replace") if path else ""
        except OSError:
            return ""

    def _current_log(self) -> Path | None:
        if self.log_path:
            return self.log_path
        return self._workdir / "tritonserver.log" if self._workdir else None

    # ---------------------------------------------------------------- start
    def start(self) -> Self:
        with self._lock:
            if self.process and self.process.poll() is None:
                return self
            install = find_install(self.venv)
            if not self.repo.is_dir():
                raise TritonStartError(
                    f"No model repository at {self.repo}: build one with 'python -m pipeline build-model'."
                )
            for model in self.models:
                if not (self.repo / model / "config.pbtxt").is_file():
                    raise TritonStartError(
                        f"{self.repo / model / 'config.pbtxt'} is missing: rebuild the model repository with "
                        "build-model."
                    )
            self._pick_ports()
            self._workdir = Path(tempfile.mkdtemp(prefix="pipeline-triton-"))
            backend_dir = self._prepare_backends(install, self._workdir)
            self._shm_prefix = f"pipeline_triton_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
            if self.requested_shm is None:
                self.shm_bytes = fitting_shm_bytes(len(self.models))
                if self.shm_bytes < DEFAULT_SHM_BYTES:
                    log.info("/dev/shm is small: %d MiB of shared memory per model", self.shm_bytes // 2**20)
            log_path = self._current_log()
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(log_path, "wb")  # noqa: SIM115 - kept open for the server's lifetime
            self.process = subprocess.Popen(
                self._command(install, backend_dir),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=install.env(),
                cwd=self._workdir,
                start_new_session=True,  # own process group: stop() can take the python stubs with it
            )
            _LIVE.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _pick_ports(self) -> None:
        taken: set[int] = set()
        for what, attr in (("HTTP", "http_port"), ("GRPC", "grpc_port"), ("Metrics", "metrics_port")):
            port = self.requested_ports[what]
            if port:
                _check_port_free(self.host, port, what)
            else:
                port = free_port(self.host)
                while port in taken:
                    port = free_port(self.host)
            taken.add(port)
            setattr(self, attr, port)

    @staticmethod
    def _prepare_backends(install: TritonInstall, workdir: Path) -> Path:
        """Trap 1: a backend folder holding the Python backend plus the stub for the venv's Python."""
        backends = workdir / "backends"
        python_dir = backends / "python"
        shutil.copytree(install.backend_src, python_dir, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(install.stub, python_dir / "triton_python_backend_stub")
        return backends

    def _command(self, install: TritonInstall, backend_dir: Path) -> list[str]:
        host = self.host
        return [
            str(install.binary),
            f"--model-repository={self.repo}",
            f"--backend-directory={backend_dir}",
            # explicit: the repository also holds model_card.json and tokenizer files that are not models
            "--model-control-mode=explicit",
            *[f"--load-model={model}" for model in self.models],
            f"--http-address={host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--backend-config=python,shm-default-byte-size={self.shm_bytes}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            # with a client's keep-alive connection open Triton waits this long on SIGTERM; keep it short
            "--exit-timeout-secs=5",
            "--log-verbose=0",
        ]

    def _ready(self, model: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/models/{model}/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        pending = list(self.models)
        while True:
            code = self.process.poll()
            if code is not None:
                raise TritonStartError(
                    self._failure(f"tritonserver exited with code {code} before its models were ready")
                )
            pending = [model for model in pending if not self._ready(model)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TritonStartError(
                    self._failure(
                        f"tritonserver did not get {', '.join(pending)} ready within {self.ready_timeout:.0f} s"
                    )
                )
            time.sleep(0.1)

    def _failure(self, what: str) -> str:
        lines = relevant_log_lines(self.log_text())
        where = f" (full log: {self.log_path})" if self.log_path else ""
        detail = "\n  ".join(lines) if lines else "(the log is empty)"
        return f"{what}{where}. Triton's log says:\n  {detail}"

    # ----------------------------------------------------------------- stop
    def stop(self) -> int | None:
        """SIGTERM (Triton unloads the models and stops its stubs), then kill the whole group; returns the exit code.

        Close clients first: an open keep-alive connection makes Triton wait ``--exit-timeout-secs``.
        """
        with self._lock:
            _LIVE.discard(self)
            process, self.process = self.process, None
            # group: the kill after the timeout also takes stubs left behind by a crashed server
            code = stop_child(process, self.stop_timeout, group=True) if process is not None else None
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            if self._shm_prefix:
                _remove_shm(self._shm_prefix)
            if self._workdir is not None:  # backend copy and default log (already quoted in any error raised)
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None
            return code

    def kill(self) -> None:
        """Kill the server and its stubs at once (for tests that simulate a crash); ``stop()`` still cleans up."""
        if self.process is not None:
            kill_group(self.process.pid)
            self.process.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _remove_shm(prefix: str) -> None:
    """Remove the Python backend's shared-memory segments a killed server left behind (ours only: unique prefix)."""
    shm = Path("/dev/shm")
    if shm.is_dir():
        for path in shm.glob(prefix + "*"):
            with contextlib.suppress(OSError):
                path.unlink()
