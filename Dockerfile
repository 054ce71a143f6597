# syntax=docker/dockerfile:1
#
# snooker-ingest: the `ingest` worker, for production. See deploy/README.md.
#
#   docker build -t snooker-ingest:0.1.0 .
#   docker run --rm --env-file ingest.env \
#       -v /srv/snooker-ingest/token:/run/secrets/ingest-token:ro \
#       -e INGEST_TOKEN_FILE=/run/secrets/ingest-token -p 9108:9108 snooker-ingest:0.1.0
#
# REQUIRED at run time: INGEST_DATABASE_URL (an external PostgreSQL). This image has no embedded
# PostgreSQL: it is the `embedded` extra (snooker-ingest[embedded]), which is not installed.
# The access token is read from INGEST_TOKEN_FILE (a mounted file / docker secret), never baked in.

ARG PYTHON_IMAGE=python:3.11-slim

############################################################################################
# builder: a virtualenv at /opt/venv holding the dependencies and the project's wheel
############################################################################################
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

# Where pip finds packages, for a build behind a mirror or a TLS-inspecting proxy. Unset (the
# default), pip uses PyPI as usual. Build arguments of this stage only: they are not in the
# runtime image. `make image` (deploy/image/build.sh) mounts a pip.conf and names it here.
#   --build-arg PIP_INDEX_URL=https://mirror.example/simple
#   --build-arg PIP_CONFIG_FILE=/mnt/pip.conf   (buildah/podman: -v DIR:/mnt:ro)
ARG PIP_INDEX_URL
ARG PIP_CONFIG_FILE

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# 1. Dependencies, in their own layer: only pyproject.toml and a stub package are copied, so this
#    layer is rebuilt when the dependencies change, not on every source edit. The stub satisfies
#    the build backend (hatchling wants the readme, the package and the force-included
#    migrations to exist); the stub project itself is uninstalled again.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    mkdir -p ingest migrations \
    && touch README.md ingest/__init__.py migrations/.stub \
    && pip install . \
    && pip uninstall --yes snooker-ingest \
    && rm -rf README.md ingest migrations build

# 2. The project itself: build a wheel from the real source and install it without touching the
#    dependencies resolved above.
COPY README.md ./
COPY migrations ./migrations
COPY ingest ./ingest
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps --wheel-dir /wheels . \
    && pip install --no-deps /wheels/*.whl

# 3. No embedded database in production: `pip install .` leaves out the `embedded` extra, so the
#    PostgreSQL server binaries are never installed. Fail the build if a dependency ever brings
#    them in again.
RUN if find /opt/venv -type f \( -name postgres -o -name initdb -o -name pg_ctl \) \
           | grep .; then echo "PostgreSQL server binaries in /opt/venv" >&2; exit 1; fi \
    && ingest --help > /dev/null

############################################################################################
# runtime: the virtualenv, a non-root user, nothing else
############################################################################################
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="snooker-ingest" \
      org.opencontainers.image.description="Streams live snooker match actions from the DDE websocket feed into PostgreSQL, exactly once. Requires INGEST_DATABASE_URL; token via INGEST_TOKEN_FILE." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim" \
      snooker-ingest.required-env="INGEST_DATABASE_URL" \
      snooker-ingest.metrics-port="9108"

# A fixed uid/gid, so volume permissions and Kubernetes' runAsNonRoot can rely on it.
RUN groupadd --system --gid 10001 ingest \
    && useradd --system --uid 10001 --gid ingest --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin ingest

COPY --from=builder /opt/venv /opt/venv

# PYTHONUNBUFFERED: log lines leave at once (docker logs, a collector), even if the process dies.
# INGEST_LOG_FORMAT / INGEST_METRICS_* are defaults; override them with -e. The metrics server
# listens on 127.0.0.1 unless told otherwise: in a container it must be 0.0.0.0 to be reachable.
# INGEST_DATABASE_URL is deliberately NOT set here: it must be given at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INGEST_LOG_FORMAT=json \
    INGEST_METRICS_PORT=9108 \
    INGEST_METRICS_HOST=0.0.0.0

USER 10001:10001

# Prometheus /metrics, plus /healthz and /readyz for an orchestrator's probes
# (`ingest run --metrics-port`, INGEST_METRICS_PORT).
EXPOSE 9108

# Healthy = the database is reachable and its schema is at head (`ingest check` exits 0, else 1).
# (It does not look at the feed: /readyz on the metrics port does.)
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["ingest", "check"]

# Exec form: `ingest` is PID 1 and receives SIGTERM itself (it commits what it received and exits
# 0 within 5 s, well inside `docker stop`'s default 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["ingest"]
CMD ["run", "--all"]
