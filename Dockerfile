# One image for both services; SERVICE (chat_service | conversation_service) picks which one runs.
# Configuration and secrets come from the environment at run time (docker-compose.yml, docs/deploy.md).

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY chat_service ./chat_service
COPY conversation_service ./conversation_service
RUN /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
# PROMETHEUS_MULTIPROC_DIR: the workers' metrics files (the entrypoint creates it). The gunicorn configs
# would make a temporary one themselves with several workers; a fixed path can be a tmpfs mount.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus-metrics
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/entrypoint.sh /usr/local/bin/docker-entrypoint
COPY deploy/docker/healthcheck.py /usr/local/bin/docker-healthcheck
WORKDIR /tmp
USER 10001:10001
EXPOSE 5001 5002
# Liveness only; compose checks /readyz (the database too) before sending traffic.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/usr/local/bin/docker-healthcheck", "/healthz"]
ENTRYPOINT ["docker-entrypoint"]
