# mlmon: Prometheus sidecar for ML models in production.
#
#   docker build -t mlmon .
#   docker run -v $PWD/mlmon.yaml:/etc/mlmon/mlmon.yaml:ro -p 8000:8000 mlmon
#
# The default command listens on 0.0.0.0:8000 (the config's server.listen defaults to loopback,
# which a container's port mapping or Prometheus cannot reach). Set server.auth_token_env to
# protect the POST routes when the port is reachable beyond the pod: without it mlmon logs a
# SECURITY warning at start. server.web_config_file adds TLS and credentials for GET routes.
#
# No init is needed: mlmon installs its own SIGTERM/SIGINT handlers, so as PID 1 it still drains
# in-flight requests (server.drain_timeout, default 20 s) and exits 0 on `docker stop` or a pod
# deletion. Keep the stop grace period (docker stop -t, terminationGracePeriodSeconds) above it.
FROM python:3.11-slim

LABEL org.opencontainers.image.title="mlmon" \
      org.opencontainers.image.description="Prometheus sidecar that monitors ML models in production" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the package (all dependencies ship as wheels for slim: no compiler needed), then drop
# the sources.
COPY pyproject.toml README.md /tmp/mlmon/
COPY exporter /tmp/mlmon/exporter
RUN pip install "/tmp/mlmon[auth]" \
 && rm -rf /tmp/mlmon \
 && groupadd --system --gid 10001 mlmon \
 && useradd --system --uid 10001 --gid mlmon --home-dir /var/lib/mlmon --no-create-home \
            --shell /usr/sbin/nologin mlmon \
 && mkdir -p /etc/mlmon /var/lib/mlmon \
 && chown mlmon:mlmon /var/lib/mlmon

# Config goes to /etc/mlmon (read-only mount); baselines and other state to /var/lib/mlmon.
WORKDIR /var/lib/mlmon
USER 10001:10001
EXPOSE 8000

# slim has no curl: probe /healthz with the standard library. Override the URL if the config
# listens elsewhere.
ENV MLMON_HEALTHCHECK_URL=http://127.0.0.1:8000/healthz
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['MLMON_HEALTHCHECK_URL'], timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["mlmon"]
CMD ["serve", "-c", "/etc/mlmon/mlmon.yaml", "--listen", "0.0.0.0:8000"]
