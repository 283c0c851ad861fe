"""Session fixtures for the model-family tests: one small random-weight checkpoint per family, saved as its library
saves it, and the model repository ``build-model`` makes of it (fp32)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.model_build.build_model import build_model
from tests.support.random_families import save_random_open_clip, save_random_siglip

from .family_fixtures import FAMILIES


def _save(name: str, folder: Path) -> Path:
    if name == "siglip":
        return save_random_siglip(folder)
    return save_random_open_clip(folder, kind="siglip" if name == "open_clip_siglip" else "clip")


@pytest.fixture(scope="session")
def family_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: _save(name, root / name) for name in FAMILIES}


@pytest.fixture(scope="session")
def family_repos(tmp_path_factory, family_folders) -> dict[str, Path]:
    out = {}
    for name, folder in family_folders.items():
        out[name] = tmp_path_factory.mktemp(f"repo-{name}") / "model_repository"
        build_model(str(folder), out[name])
    return out
