"""One way to configure: every setting goes through ``pipeline.settings``' parsers; a value that cannot be used is one
sentence naming the variable, and exit status 2 for every command, ``--help`` included."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app.config import AppConfig
from pipeline.settings import Settings, SettingsError

from .conftest import REPO_ROOT

BAD = {
    "MAX_IMAGE_MB": "abc",
    "MAX_IMAGE_PIXELS": "1e9",
    "MAX_TEXT_CHARS": "-5",
    "CACHE_SIZE_MB": "0",
    "INGEST_BATCH_SIZE": "lots",
    "MONGO_TIMEOUT_MS": "3s",
    "TRITON_TIMEOUT_S": "nan",
    "TRITON_FALLBACK": "remote",
    "QDRANT_COLLECTION": "../escape",
    "QDRANT_HNSW_EF": "-3",
    "VECTOR_STORAGE": "tape",
    "VECTOR_WARM": "perhaps",
    "VECTOR_FUSED": "maybe",
    "MATCH_THRESHOLD": "high",
    "SIMILAR_THRESHOLD": "inf",
}


@pytest.mark.parametrize(("name", "value"), BAD.items())
def test_each_bad_value_is_one_sentence_naming_the_variable(name, value):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: value})
    message = str(err.value)
    assert message.startswith(f"{name}=") and "\n" not in message


def test_app_settings_use_the_same_parsers():
    for env in ({"GRADIO_SERVER_PORT": "70000"}, {"GRADIO_SHARE": "perhaps"}, {"APP_TOP_K": "ten"}):
        with pytest.raises(SettingsError, match=next(iter(env))):
            AppConfig.from_env(env)
    assert Settings.from_env({"TRITON_VENV": "~/tv"}).triton_venv.name == "tv"
    assert Settings.from_env({}).index_tuning.storage == "turbo8"
    assert not Settings.from_env({}).index_tuning.warm_after_open
    assert Settings.from_env({"VECTOR_WARM": "1"}).index_tuning.warm_after_open
    assert not Settings.from_env({"VECTOR_WARM": "0"}).index_tuning.warm_after_open
    assert Settings.from_env({}).index_tuning.fused_vector
    assert not Settings.from_env({"VECTOR_FUSED": "0"}).index_tuning.fused_vector


COMMANDS = [
    ["-m", "pipeline", "--help"],
    ["-m", "pipeline", "status"],
    ["-m", "pipeline", "ingest", "x"],
    ["-m", "app"],
]


@pytest.mark.parametrize("args", COMMANDS)
def test_every_command_exits_2_with_the_sentence(args, tmp_path):
    env = {**os.environ, "MAX_IMAGE_MB": "abc", "DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    assert len(proc.stderr.strip().splitlines()) == 1 and "MAX_IMAGE_MB='abc' is not a number" in proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout


def test_every_variable_is_in_readmes_table():
    """README's configuration table names every variable the settings read (the library's and the app's)."""
    import re

    from .conftest import REPO_ROOT

    read = set()
    for source in ("pipeline/settings.py", "app/config.py"):
        text = (REPO_ROOT / source).read_text()
        read |= set(re.findall(r'env_\w+\(env, "([A-Z_]+)"', text)) | set(re.findall(r'env\.get\("([A-Z_]+)"', text))
    table = (REPO_ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    assert len(read) > 25 and not read - documented, f"not in README's table: {sorted(read - documented)}"
