"""The folder layout is the architecture: the runtime (what the app and the query path load) never imports the model
build, and nothing but the model build imports torch. Checked on the source (every import, lazy ones included) and in a
fresh interpreter that imports every runtime module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from .conftest import REPO_ROOT

RUNTIME = ["pipeline/query", "pipeline/inference", "pipeline/storage", "pipeline/ingestion", "pipeline/ops", "app"]
RUNTIME_FILES = ["pipeline/service.py", "pipeline/settings.py", "pipeline/errors.py", "pipeline/model_repo.py",
                 "pipeline/ports.py", "pipeline/progress.py"]  # fmt: skip
BUILD = "pipeline/model_build"


def _files(*roots: str) -> list[Path]:
    out = []
    for root in roots:
        path = REPO_ROOT / root
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_runtime_never_imports_the_model_build():
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {name}"
        for path in _files(*RUNTIME, *RUNTIME_FILES)
        for line, name in _imports(path)
        if name == "pipeline.model_build" or name.startswith("pipeline.model_build.")
    ]
    assert not offenders, offenders


def test_only_the_model_build_imports_torch():
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {name}"
        for path in _files("pipeline", "app")
        if not path.is_relative_to(REPO_ROOT / BUILD)
        for line, name in _imports(path)
        if name.split(".")[0] in ("torch", "torchvision")
    ]
    assert not offenders, offenders


def test_importing_every_runtime_module_loads_neither_torch_nor_the_build():
    modules = [
        ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in _files(*RUNTIME, *RUNTIME_FILES)
        if p.name not in ("__main__.py", "triton_python_model.py")  # runs inside Triton's interpreter only
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision') "
        "or m.startswith('pipeline.model_build'))\n"
        "print(len(bad), bad[:5])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("0 "), proc.stdout
