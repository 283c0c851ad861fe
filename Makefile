# Two commands on a fresh machine: `make run` (the app on embedded defaults) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_CATALOG := assets/demo_catalog/catalog.jsonl

.PHONY: audit venv triton-venv browser model demo run test lint bench clean

$(STAMP): requirements.txt requirements-build.txt requirements-nodeps.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-build.txt -r requirements-dev.txt
	# These would pull a newer (CUDA) torch as a dependency; only their packaged files are used.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

venv: $(STAMP)

# Triton's server side lives in its own venv (nvidia-pytriton pins numpy<2; the app needs numpy>=2).
triton-venv:
	bash scripts/setup_triton_venv.sh

# Debian's chromium for the browser tests (apt-get; never a browser download).
browser:
	bash scripts/install_browser.sh

# The model named by MODEL_SOURCE (default: CLIP from the hub, else the packaged offline model), unless one is built.
model: venv
	$(PY) -m pipeline build-model --if-missing

# The demo catalogue, only into an empty catalogue.
demo: model
	$(PY) -m pipeline ingest $(DEMO_CATALOG) --if-empty

run: demo
	$(PY) -m app

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Known vulnerabilities in the pinned runtime set fail it; a service that knows none of the versions is one line.
audit: venv
	$(PY) scripts/audit.py

test: venv triton-venv browser lint audit
	$(PY) -m pytest

# The Spaces image built with buildah, run with podman, queried and stopped (root; minutes; scripts/image_test.sh).
.PHONY: image-test
image-test: venv
	REQUIRE_IMAGE=1 $(PY) -m pytest -q tests/test_image.py

clean:
	rm -rf $(VENV) .venv-triton data test-artifacts .pytest_cache .ruff_cache
