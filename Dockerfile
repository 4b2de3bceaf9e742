# syntax=docker/dockerfile:1
# One image, three commands: `itemflow serve` (API), `itemflow worker`, `itemflow runner`.
# Build for Cloud Run with: docker buildx build --platform linux/amd64 -t IMAGE --push .
# BASE_IMAGE is Debian 12 on purpose: the sandbox runs automations with Debian's own
# /usr/bin/python3.11 (stdlib only), which must match what the tests were run against.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# binutils (this stage only): `strip` for the dependencies' extension modules, below.
# Not pinned, for the same reason as the runtime stage's packages (see there).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (pinned by requirements.lock), so code changes reuse this layer.
COPY pyproject.toml requirements.lock README.md ./
RUN pip install --no-cache-dir "pip==25.3" \
    && python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/runtime-requirements.txt
RUN pip install --no-cache-dir -c requirements.lock -r /tmp/runtime-requirements.txt
COPY src ./src
RUN pip install --no-cache-dir --no-deps -c requirements.lock .
# Only what runs goes to the runtime stage (bench/README.md has the sizes):
# - no pip or setuptools: nothing is installed at run time (-24 MB);
# - extension modules without their debug info (-26 MB); symbol tables stay, so native stack
#   traces (py-spy --native) still name functions. Modules without debug info are not
#   rewritten (psycopg-binary's, whose RPATH was patched when its wheel was built);
# - no greenlet test suite.
# The bytecode pip compiled stays, for every module: /opt/venv is read-only at run time, so
# a missing .pyc would be compiled again in memory at every start.
# Then every extension module must still import.
RUN python -m pip uninstall --yes pip setuptools \
    && find /opt/venv -name '*.so' -type f -exec sh -c \
        'for f; do if readelf -S "$f" | grep -q "[.]debug_"; then strip --strip-debug "$f"; fi; done' sh {} + \
    && rm -rf /opt/venv/lib/python3*/site-packages/greenlet/tests \
    && python -c "import importlib, pathlib, sysconfig, psycopg; site = pathlib.Path(sysconfig.get_path('purelib')); [importlib.import_module('.'.join(so.relative_to(site).parent.parts + (so.name.split('.')[0],))) for so in site.rglob('*.so')]"

FROM ${BASE_IMAGE} AS runtime
# bubblewrap and Debian's python3 run the sandbox; util-linux (setpriv) is already in the base.
# Versions are not pinned: the base image fixes the Debian release, and Debian replaces a
# package version in its archive with each security update, so a pin would break the build
# exactly when a fix ships.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 itemflow \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/itemflow --create-home \
        --shell /usr/sbin/nologin itemflow
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ITEMFLOW_DATA_DIR=/var/lib/itemflow \
    PORT=8000
WORKDIR /var/lib/itemflow
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz\", timeout=4)"]
# Shell form through sh -c so $PORT (set by Cloud Run) is expanded at start; exec keeps the
# server as PID 1 so it receives SIGTERM. Workers and the runner override the command.
CMD ["sh", "-c", "exec itemflow serve --host 0.0.0.0 --port \"${PORT:-8000}\""]
