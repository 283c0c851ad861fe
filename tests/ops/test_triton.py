"""Triton: configs, the Python-backend model, the bundled tritonserver, the Triton inference backend and its fallback.

The server tests run a real ``tritonserver`` (from the nvidia-pytriton wheel in .venv-triton) on free loopback ports;
they skip only when that venv is absent (``scripts/setup_triton_venv.sh`` creates it).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from pipeline import model_repo as mr
from pipeline.errors import BackendUnavailable, ModelMismatch, PipelineError
from pipeline.inference.triton_backend import FallbackBackend, TritonBackend
from pipeline.model_build.triton_repo import TensorSpec, render_config, write_triton_model
from pipeline.processes.ports import free_port
from pipeline.processes.triton import TritonNotInstalled, TritonServer, TritonStartError, find_install
from tests.support.triton_fixtures import TINY, build_tiny_repo, image_batch, require_triton, text_batch

ROOT = Path(__file__).resolve().parents[2]


def _local_backend(repo: Path):
    from pipeline.inference.ort_backend import OrtBackend

    return OrtBackend(repo)


def _batch(model: str, n: int, seed: int = 1) -> dict[str, np.ndarray]:
    return text_batch(n, seed) if model == mr.TEXT_MODEL else image_batch(n, seed)


def _stats(backend: TritonBackend, model: str) -> tuple[int, int]:
    stats = backend.statistics(model)["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


# --------------------------------------------------------------------------------------------- configs (no server)
def test_python_config_is_valid_model_config(tmp_path: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    inputs = [TensorSpec("input_ids", "TYPE_INT64", (8,)), TensorSpec("attention_mask", "TYPE_INT64", [8])]
    outputs = [TensorSpec("embedding", "TYPE_FP32", (16,))]
    write_triton_model(tmp_path / "clip_text", "clip_text", inputs, outputs, max_batch_size=32, instances=2)
    config = text_format.Parse((tmp_path / "clip_text/config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.backend == "python" and config.max_batch_size == 32
    assert [(t.name, list(t.dims)) for t in config.input] == [("input_ids", [8]), ("attention_mask", [8])]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.instance_group[0].count == 2
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 5000
    assert (tmp_path / "clip_text/1/model.py").read_text() == (
        ROOT / "pipeline/inference/triton_python_model.py"
    ).read_text()


def test_gpu_config_uses_onnxruntime_platform_and_drops_model_py(tmp_path: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    spec = [TensorSpec("pixel_values", "TYPE_FP32", (3, 32, 32))], [TensorSpec("embedding", "TYPE_FP32", (16,))]
    write_triton_model(tmp_path / "clip_visual", "clip_visual", *spec)  # python first: leaves a model.py
    write_triton_model(tmp_path / "clip_visual", "clip_visual", *spec, backend="onnxruntime")
    config = text_format.Parse((tmp_path / "clip_visual/config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert (config.platform, config.backend) == ("onnxruntime_onnx", "onnxruntime")
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert config.HasField("dynamic_batching")
    assert not (tmp_path / "clip_visual/1/model.py").exists()


def test_config_rejects_unknown_backend_and_type() -> None:
    with pytest.raises(ValueError, match="backend"):
        render_config("m", [], [], backend="tensorflow")
    with pytest.raises(ValueError, match="data type"):
        TensorSpec("x", "FP32", (1,))


# ------------------------------------------------------------------- the Python-backend model, without a server
class _FakeTensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _FakeResponse:
    def __init__(self, output_tensors: list, error: object = None) -> None:
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


def _fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _FakeTensor
    module.InferenceResponse = _FakeResponse
    module.TritonError = lambda message: message
    module.get_input_tensor_by_name = lambda request, name: _FakeTensor(name, request[name])
    module.triton_string_to_numpy = lambda t: {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64}[t]
    return module


def _load_python_model(repo: Path, model: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    spec = importlib.util.spec_from_file_location(f"model_py_{model}", repo / model / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = (repo / model / "config.pbtxt").read_text()
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    parsed = text_format.Parse(config, model_config_pb2.ModelConfig())
    as_json = json_format.MessageToJson(parsed, preserving_proto_field_name=True)
    instance = module.TritonPythonModel()
    instance.initialize(
        {"model_config": as_json, "model_name": model, "model_repository": str(repo / model), "model_version": "1"}
    )
    return instance


def test_python_model_runs_one_batch_and_splits_per_request(tiny_repo, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, _card = tiny_repo
    model = _load_python_model(repo, mr.TEXT_MODEL, monkeypatch)
    calls = []
    real_run = model._run
    model._run = lambda feed: calls.append(len(feed["input_ids"])) or real_run(feed)
    requests = [text_batch(n, seed=n) for n in (1, 3, 2)]
    responses = model.execute(requests)
    assert calls == [6]  # one onnxruntime call for the whole dynamic batch
    local = _local_backend(repo)
    for request, response in zip(requests, responses, strict=True):
        assert response.error is None
        np.testing.assert_allclose(response.outputs["embedding"], local.run(mr.TEXT_MODEL, request), atol=1e-6)


def test_python_model_isolates_a_failing_request(tiny_repo, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, _card = tiny_repo
    model = _load_python_model(repo, mr.TEXT_MODEL, monkeypatch)
    good = text_batch(2)
    bad = text_batch(1)
    bad["input_ids"] = bad["input_ids"] + 10_000  # out of the vocabulary: Gather fails
    responses = model.execute([good, bad])
    assert responses[0].error is None and responses[0].outputs["embedding"].shape == (2, TINY["embedding_dim"])
    assert "onnxruntime failed" in responses[1].error


# ------------------------------------------------------------------------------------ the Triton venv and server
def test_missing_triton_venv_names_the_setup_script(tmp_path: Path, tiny_repo) -> None:
    with pytest.raises(TritonNotInstalled, match=r"setup_triton_venv\.sh"):
        find_install(tmp_path / "no-venv")
    with pytest.raises(TritonNotInstalled, match="No Triton venv"):
        TritonServer(tiny_repo[0], venv=tmp_path / "no-venv").start()


def test_missing_venv_from_the_command(tmp_path: Path, tiny_repo) -> None:
    code = (
        "import argparse, sys\n"
        "from pipeline.ops.triton import add_arguments, run_from_args\n"
        "p = argparse.ArgumentParser(); add_arguments(p)\n"
        f"sys.exit(run_from_args(p.parse_args(['--model-repository', {str(tiny_repo[0])!r}])))\n"
    )
    env = {**os.environ, "TRITON_VENV": str(tmp_path / "absent")}
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "No Triton venv" in done.stderr and "scripts/setup_triton_venv.sh" in done.stderr


def test_server_starts_on_free_loopback_ports(triton_server: TritonServer) -> None:
    assert triton_server.url.startswith("http://127.0.0.1:")
    ports = {triton_server.http_port, triton_server.grpc_port, triton_server.metrics_port}
    assert len(ports) == 3
    with socket.create_connection(("127.0.0.1", triton_server.http_port), timeout=2):
        pass


@pytest.mark.parametrize("model", [mr.TEXT_MODEL, mr.VISUAL_MODEL])
@pytest.mark.parametrize("n", [1, 7])
def test_triton_embeddings_equal_in_process(triton_server, tiny_repo, model: str, n: int) -> None:
    repo, _card = tiny_repo
    backend = TritonBackend(triton_server.url, timeout_s=30)
    try:
        inputs = _batch(model, n)
        got = backend.run(model, inputs)
        want = _local_backend(repo).run(model, inputs)
        assert got.shape == (n, TINY["embedding_dim"]) and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-5
    finally:
        backend.close()


def test_batch_larger_than_max_batch_size_is_split(triton_server, tiny_repo) -> None:
    repo, _card = tiny_repo
    backend = TritonBackend(triton_server.url)
    try:
        assert backend.max_batch_size == 16  # from the server's config, as build_tiny_repo wrote it
        inputs = image_batch(40)
        before = _stats(backend, mr.VISUAL_MODEL)
        got = backend.run(mr.VISUAL_MODEL, inputs)
        after = _stats(backend, mr.VISUAL_MODEL)
        assert np.abs(got - _local_backend(repo).run(mr.VISUAL_MODEL, inputs)).max() <= 1e-5
        assert after[0] - before[0] == 40  # every item inferred once, in chunks of at most 16
    finally:
        backend.close()


def test_eight_threads_all_succeed_and_get_batched(triton_server, tiny_repo) -> None:
    repo, _card = tiny_repo
    backend = TritonBackend(triton_server.url, timeout_s=30)
    local = _local_backend(repo)
    start = threading.Barrier(8)
    errors: list[BaseException] = []
    checked = []

    def worker(k: int) -> None:
        try:
            start.wait(timeout=30)
            for j in range(15):
                inputs = image_batch(1, seed=1000 * k + j)
                got = backend.run(mr.VISUAL_MODEL, inputs)
                checked.append(float(np.abs(got - local.run(mr.VISUAL_MODEL, inputs)).max()))
        except BaseException as exc:
            errors.append(exc)

    try:
        before = _stats(backend, mr.VISUAL_MODEL)
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        after = _stats(backend, mr.VISUAL_MODEL)
    finally:
        backend.close()
    assert not errors, errors[:3]
    assert len(checked) == 120 and max(checked) <= 1e-5
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 120
    assert executions < inferences, f"no dynamic batching: {executions} executions for {inferences} inferences"


def test_check_accepts_the_matching_card(triton_server, tiny_repo) -> None:
    backend = TritonBackend(triton_server.url)
    try:
        backend.check(tiny_repo[1])
    finally:
        backend.close()


def test_check_detects_a_wrong_embedding_size(triton_server, tiny_repo) -> None:
    card = tiny_repo[1]
    wrong = mr.ModelCard(**{**card.__dict__, "embedding_dim": 32})
    backend = TritonBackend(triton_server.url)
    try:
        with pytest.raises(
            ModelMismatch, match=r"clip_text with outputs embedding FP32 \[-1, 16\].*expects embedding FP32"
        ):
            backend.check(wrong)
    finally:
        backend.close()


def test_check_detects_other_weights(triton_server, tiny_repo) -> None:
    card = tiny_repo[1]
    other = mr.ModelCard(**{**card.__dict__, "sha256": {k: "0" * 64 for k in card.sha256}})
    backend = TritonBackend(triton_server.url)
    try:
        with pytest.raises(ModelMismatch, match="serves other weights"):
            backend.check(other)
    finally:
        backend.close()


def test_nothing_listening_is_backend_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    backend = TritonBackend(url, timeout_s=5, connect_timeout_s=2)
    try:
        with pytest.raises(BackendUnavailable, match=f"Triton at {url} does not answer"):
            backend.run(mr.TEXT_MODEL, text_batch(1))
        assert backend.max_batch_size is None
    finally:
        backend.close()


def test_killed_server_gives_clear_error_and_fallback_switches(tiny_repo, caplog: pytest.LogCaptureFixture) -> None:
    require_triton()
    repo, card = tiny_repo
    server = TritonServer(repo, ready_timeout=90).start()
    triton = TritonBackend(server.url, timeout_s=10)
    guarded = FallbackBackend(TritonBackend(server.url, timeout_s=10), lambda: _local_backend(repo))
    try:
        guarded.check(card)
        assert guarded.description == f"Triton at {server.url}"
        inputs = image_batch(4)
        want = _local_backend(repo).run(mr.VISUAL_MODEL, inputs)
        assert np.abs(guarded.run(mr.VISUAL_MODEL, inputs) - want).max() <= 1e-5

        failures: list[BaseException] = []

        def keep_running() -> None:
            try:
                for _ in range(100_000):
                    triton.run(mr.VISUAL_MODEL, inputs)
            except BaseException as exc:
                failures.append(exc)

        runner = threading.Thread(target=keep_running)
        runner.start()
        time.sleep(0.3)
        server.kill()  # SIGKILL to the server and its stubs, mid-run
        runner.join(timeout=30)
        assert not runner.is_alive()
        assert len(failures) == 1 and isinstance(failures[0], BackendUnavailable), failures
        assert f"Triton at {server.url} does not answer" in str(failures[0])

        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                assert np.abs(guarded.run(mr.VISUAL_MODEL, inputs) - want).max() <= 1e-5
        assert guarded.switched
        assert "fallback" in guarded.description and server.url in guarded.description
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "Switching to" in r.getMessage()]
        assert len(warnings) == 1
        guarded.check(card)  # the fallback now answers checks too
    finally:
        triton.close()
        guarded.close()
        server.stop()
    assert not list(Path("/dev/shm").glob(server._shm_prefix + "*"))


def test_fallback_does_not_mask_a_model_mismatch() -> None:
    class Mismatched:
        description, max_batch_size = "Triton at x", 8

        def check(self, card):
            raise ModelMismatch("other model")

        def run(self, model, inputs):
            raise ModelMismatch("other model")

        def close(self):
            pass

    made = []
    guarded = FallbackBackend(Mismatched(), lambda: made.append(1))
    with pytest.raises(ModelMismatch):
        guarded.run(mr.TEXT_MODEL, text_batch(1))
    assert not made and not guarded.switched


def test_port_taken_is_a_clear_error(tiny_repo) -> None:
    require_triton()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(TritonStartError, match=f"Port {port} on 127.0.0.1 \\(HTTP\\) is already in use"):
            TritonServer(tiny_repo[0], http_port=port).start()


def test_model_that_fails_to_load_quotes_the_log(tmp_path: Path) -> None:
    require_triton()
    repo = tmp_path / "repo"
    build_tiny_repo(repo)
    mr.onnx_path(repo, mr.VISUAL_MODEL).write_bytes(b"this is not an onnx file")
    # A generous deadline: on a loaded 2-core machine the python backend's start alone can take a minute.
    server = TritonServer(repo, ready_timeout=300)
    with pytest.raises(TritonStartError) as err:
        server.start()
    message = str(err.value)
    assert "exited with code" in message, "exited with an error, not a timeout"
    assert "clip_visual" in message
    assert server.process is None


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def test_serve_command_starts_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    require_triton()
    repo = tmp_path / "serve_repo"
    build_tiny_repo(repo)
    ports = [free_port() for _ in range(3)]
    args = ["--model-repository", str(repo), "--http-port", str(ports[0]), "--grpc-port", str(ports[1])]
    args += ["--metrics-port", str(ports[2]), "--log-file", str(tmp_path / "triton.log")]
    code = (
        "import argparse, sys\n"
        "from pipeline.ops.triton import add_arguments, run_from_args\n"
        "p = argparse.ArgumentParser(); add_arguments(p)\n"
        f"sys.exit(run_from_args(p.parse_args({args!r})))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "is ready at" in line:
                break
        assert any(f"http://127.0.0.1:{ports[0]}" in line and "ready" in line for line in lines), lines
        backend = TritonBackend(f"http://127.0.0.1:{ports[0]}")
        assert backend.run(mr.TEXT_MODEL, text_batch(2)).shape == (2, TINY["embedding_dim"])
        backend.close()
        assert _processes_mentioning(str(repo))  # server and stubs are up
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + out
    assert "Stopping Triton" in out
    assert not _processes_mentioning(str(repo)), "tritonserver or its stubs outlived the command"
    assert not list(Path("/dev/shm").glob(f"pipeline_triton_{proc.pid}_*")), "leaked shared memory"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ports[0]), timeout=1).close()


def test_triton_log_lines_are_picked_for_errors() -> None:
    from pipeline.processes.triton import relevant_log_lines

    log = (
        "I1127 07:46:06.7 1 server.cc:1] starting\n"
        "W1127 07:46:06.7 1 pinned_memory_manager.cc:1] Unable to allocate pinned system memory: CUDA driver\n"
        "E1127 07:46:06.9 1 model_lifecycle.cc:1] failed to load 'clip_visual' version 1: Internal: bad onnx\n"
    )
    assert relevant_log_lines(log) == [log.splitlines()[-1]]


def test_status_json_of_server_is_not_needed_for_readiness(triton_server) -> None:
    """Readiness is per model (the repository holds non-model files): both models report ready over plain HTTP."""
    import urllib.request

    for model in (mr.TEXT_MODEL, mr.VISUAL_MODEL):
        with urllib.request.urlopen(f"{triton_server.url}/v2/models/{model}", timeout=5) as resp:
            meta = json.loads(resp.read())
        assert meta["name"] == model


def test_run_rejects_ragged_inputs(triton_server) -> None:
    backend = TritonBackend(triton_server.url)
    try:
        inputs = text_batch(2)
        inputs["attention_mask"] = inputs["attention_mask"][:1]
        with pytest.raises(PipelineError, match="different batch sizes"):
            backend.run(mr.TEXT_MODEL, inputs)
    finally:
        backend.close()


def test_shared_memory_fits_a_containers_small_dev_shm(tmp_path: Path) -> None:
    """A 64 MiB tmpfs, as Docker, podman and Spaces give a container's /dev/shm: the two models get a quarter of it
    each instead of the 32 MiB that made Triton fail to load them there; a roomy one gets the full 32 MiB."""
    from pipeline.processes.triton import DEFAULT_SHM_BYTES, fitting_shm_bytes

    small = tmp_path / "shm"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        assert fitting_shm_bytes(2, small) == 8 * 2**20
        assert fitting_shm_bytes(2, tmp_path / "missing") == DEFAULT_SHM_BYTES
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
    assert fitting_shm_bytes(2, Path("/dev/shm")) <= DEFAULT_SHM_BYTES
