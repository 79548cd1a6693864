# One image for every Python service of docker-compose.yml (api, flows, bootstrap, traffic,
# evidently-ui, mlflow, prefect-server): the locked environment, the fraudops CLI and the
# project files its commands read (params.yaml, dvc.yaml, data.dvc, routing.yaml, .dvc/).
#
# BASE_IMAGE is the official Python 3.11 slim image by default. Any Debian bookworm image
# with python3.11 works too (the compose test builds on one made with debootstrap, which has
# python3-minimal only): the first stage adds the standard library and venv when missing.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS python
# Pinning Debian's python3-venv would tie the image to one point release of bookworm;
# the interpreter's version is pinned by the base image itself.
# hadolint ignore=DL3008
RUN if ! python3 -c "import ensurepip, sqlite3, ssl, venv" 2>/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi

FROM python AS build
WORKDIR /build
# uv trusts the system's CA store (as pip does), not only the roots it was built with.
ENV UV_SYSTEM_CERTS=1
# The dependencies first, from the lock alone: this layer is rebuilt only when the lock is.
# uv itself comes from the lock too, hash-checked by pip, before it installs the rest.
# Bytecode is compiled here: the image runs with PYTHONDONTWRITEBYTECODE, so otherwise every
# container start would compile each module it imports (twice the start-up time).
COPY requirements.lock ./
RUN python3 -m venv /opt/venv \
    && awk '/^uv==/ { keep = 1 } keep { print } keep && !/\\$/ { exit }' requirements.lock \
        > uv.txt \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes --requirement uv.txt \
    && /opt/venv/bin/uv pip sync --python /opt/venv/bin/python --require-hashes --no-cache \
        --compile-bytecode requirements.lock
# Then the project, without its dependencies (all locked above) and with the locked
# setuptools as its build backend, so nothing unhashed is downloaded.
COPY pyproject.toml README.md ./
COPY src ./src
COPY pipelines ./pipelines
COPY serving ./serving
COPY monitoring ./monitoring
RUN /opt/venv/bin/uv pip install --python /opt/venv/bin/python --no-deps --no-cache \
        --no-build-isolation --compile-bytecode .

FROM python AS runtime
# NannyML imports LightGBM (through FLAML), whose library links the system's OpenMP runtime:
# without libgomp1 (in neither the slim nor the debootstrap base) every monitoring run fails
# at import. Pinned by the base image's Debian release, as python3-venv above.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 fraudops \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/fraudops fraudops
COPY --from=build /opt/venv /opt/venv
# /app is the working directory every command runs in. Compose mounts a named volume on it,
# which Docker fills from here on first use: the data, its DVC versions and cache, and the
# state directory then persist and are shared by the services.
WORKDIR /app
COPY --chown=fraudops:fraudops params.yaml dvc.yaml data.dvc routing.yaml .dvcignore ./
COPY --chown=fraudops:fraudops .dvc/config .dvc/config
COPY deploy/bootstrap.sh /usr/local/bin/fraudops-bootstrap
# No git in the image: DVC versions data without one (its remote is /app/dvc-remote).
RUN printf '[core]\n    no_scm = true\n' > .dvc/config.local \
    && mkdir -p data .fraudops dvc-remote monitoring /var/lib/fraudops/mlflow-artifacts \
    && chown -R fraudops:fraudops /app /var/lib/fraudops
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FRAUDOPS_HOME=/app/.fraudops \
    DO_NOT_TRACK=true \
    MLFLOW_DISABLE_TELEMETRY=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DVC_NO_ANALYTICS=1 \
    ITERATIVE_DO_NOT_TRACK=true \
    NML_DISABLE_USAGE_LOGGING=1
USER 10001:10001
CMD ["fraudops", "--help"]
