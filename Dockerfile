# Hugging Face Spaces (Docker SDK): the app on port 7860, the models served by a local Triton on loopback.
# Stage 1 builds the model repository (needs torch); stage 2 runs it (no torch).
# MODEL_SOURCE: a hub id or hf-hub:ORG/NAME (default hf-hub:Marqo/marqo-ecommerce-embeddings-B, README's model table),
# a model folder inside the build context, or "offline".

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY requirements.txt requirements-build.txt requirements-nodeps.txt ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install -r requirements-build.txt \
    && /opt/venv/bin/pip install --no-deps -r requirements-nodeps.txt
COPY pipeline ./pipeline
ARG MODEL_SOURCE=""
RUN MODEL_SOURCE="${MODEL_SOURCE}" /opt/venv/bin/python -m pipeline build-model --out /src/model_repository

FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
# Spaces runs the container as uid 1000; everything it writes lives under its HOME.
RUN useradd --create-home --uid 1000 user
USER 1000
ENV HOME=/home/user \
    PATH=/home/user/app/.venv/bin:$PATH \
    DATA_DIR=/home/user/data \
    MODEL_REPOSITORY=/home/user/app/model_repository \
    TRITON_VENV=/home/user/app/.venv-triton \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860
WORKDIR /home/user/app
COPY --chown=1000 requirements.txt requirements-triton.txt ./
COPY --chown=1000 scripts/setup_triton_venv.sh ./scripts/
RUN python -m venv .venv \
    && .venv/bin/pip install -r requirements.txt \
    && bash scripts/setup_triton_venv.sh
COPY --chown=1000 . .
COPY --from=build --chown=1000 /src/model_repository ./model_repository
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=8)"]
CMD ["bash", "scripts/docker-entrypoint.sh"]
