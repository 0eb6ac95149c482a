# syntax=docker/dockerfile:1
# The AIOS image: every processor (`aios worker …`, `aios topics create`, `aios api`) runs from it.

# --- build: wheels for the project and every dependency (a compiler only where a sdist needs one)
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
# aios/ is the import namespace: it holds the CLI, benches and dev stack, and links to the layers below.
COPY aios ./aios
COPY schemas ./schemas
COPY connectors ./connectors
COPY agents ./agents
COPY streams ./streams
COPY api ./api
RUN pip wheel --wheel-dir /wheels ".[vector,registry,anthropic,mcp,a2a,s3]"

# --- the history sink's Avro → Native transcoder (Rust, pyo3): an abi3 wheel for CPython 3.11+.
# Debian bookworm's python3 is 3.11, as in the runtime image.
FROM rust:1-slim-bookworm AS transcoder
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /venv && /venv/bin/pip install --no-cache-dir "maturin>=1.7,<2"
COPY connectors/history/transcoder /src
RUN /venv/bin/maturin build --release --locked --manifest-path /src/Cargo.toml --out /wheels

# --- runtime
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=transcoder,source=/wheels,target=/transcoder \
    pip install --no-index --find-links /wheels --find-links /transcoder "aios[vector,registry,anthropic,mcp,a2a,s3]" aios-transcoder
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/aios aios
USER aios
WORKDIR /var/lib/aios
ENV AIOS_DATA_DIR=/var/lib/aios \
    AIOS_METRICS_PORT=9464
EXPOSE 9464
ENTRYPOINT ["aios"]
CMD ["--help"]
