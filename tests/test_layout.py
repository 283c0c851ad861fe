"""The folder layout is the architecture: layers import only downwards, the runtime (what the app and the query path
load) never imports the model build, and nothing but the model build imports torch. Checked on the source (every
import, lazy ones included) and in a fresh interpreter that imports every runtime module. docs/architecture.md
draws the same order."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from .conftest import REPO_ROOT

RUNTIME = ["pipeline/query", "pipeline/inference", "pipeline/storage", "pipeline/ingestion", "pipeline/ops",
           "pipeline/processes", "app"]  # fmt: skip
BASE = ["pipeline.errors", "pipeline.settings", "pipeline.types", "pipeline.inputs", "pipeline.batches",
        "pipeline.progress", "pipeline.model_repo", "pipeline.url_fetch"]  # fmt: skip
RUNTIME_FILES = ["pipeline/service.py", *(f"{name.replace('.', '/')}.py" for name in BASE)]
BUILD = "pipeline/model_build"

# Highest first; each layer is a list of parts, each part a tuple of packages or modules. A module may import its own
# part and the parts of any layer below its own: never a layer above, nor another part of its own layer (storage and
# inference know nothing of each other, nor do ops and the model build).
LAYERS: list[list[tuple[str, ...]]] = [
    [("app",)],
    [("pipeline.cli", "pipeline.__main__")],
    [("pipeline.ops",), ("pipeline.model_build",)],
    [("pipeline.ingestion",)],
    [("pipeline.service",)],
    [("pipeline.query",)],
    [("pipeline.storage",), ("pipeline.inference",)],
    [("pipeline.processes",)],
    [(*BASE, "pipeline")],
]


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


def _part(module: str) -> tuple[int, str, str] | None:
    """(layer, part's first name, the name matched) of a module of ours: the longest name it falls under."""
    best = None
    for rank, parts in enumerate(LAYERS):
        for part in parts:
            for name in part:
                if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[2])):
                    best = (rank, part[0], name)
    return best


def _module(path: Path) -> str:
    return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")


def reverse_imports(paths: list[Path]) -> list[str]:
    offenders = []
    for path in paths:
        here = _part(_module(path))
        assert here is not None, f"{path} is in no layer of LAYERS"
        for line, name in _imports(path):
            there = _part(name)
            if there is None or there[1] == here[1] or there[0] > here[0]:
                continue
            if there[2] == "pipeline" and name != "pipeline":
                continue  # `from pipeline import x` is the import of pipeline.x, judged on its own entry
            offenders.append(f"{path.relative_to(REPO_ROOT)}:{line} ({here[1]}) imports {name} ({there[1]})")
    return offenders


def test_layers_import_only_downwards():
    assert not reverse_imports(_files("pipeline", "app")), reverse_imports(_files("pipeline", "app"))


def test_a_reverse_import_is_found(tmp_path):
    """The check itself can fail: a storage module that imports the query layer is named."""
    bad = REPO_ROOT / "pipeline" / "storage" / "_layout_probe.py"
    bad.write_text("from ..query import matcher\nfrom ..errors import InvalidInput\n")
    try:
        found = reverse_imports([bad])
    finally:
        bad.unlink()
    assert found == ["pipeline/storage/_layout_probe.py:1 (pipeline.storage) imports pipeline.query (pipeline.query)",
                     "pipeline/storage/_layout_probe.py:1 (pipeline.storage) imports pipeline.query.matcher "
                     "(pipeline.query)"]  # fmt: skip


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
