# Headrace: one image for every service (`headrace up|api|dispatcher|runner|projector|rebuild`).
#
#   docker build -t headrace .
#   docker run -p 8080:8080 -v headrace-data:/data -e DATABASE_URL=postgresql://… headrace
#
# The package is installed like any wheel (`pip install .`, not editable): the wheel carries
# schemas/, plugins/, the migrations and config.example.yaml (setup.py, pyproject.toml), so the
# source is removed once installed; only deploy/ (the image's default config) stays, in /app.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so code changes do not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . /src
RUN pip install --no-deps . \
    && mkdir -p /app \
    && cp -r deploy /app/deploy \
    && cd / \
    && rm -rf /src \
    && groupadd --system --gid 10001 headrace \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/headrace --shell /usr/sbin/nologin headrace \
    && mkdir -p /data \
    && chown headrace /data

WORKDIR /app
# numeric, so Kubernetes' runAsNonRoot can verify it (deploy/k8s runs it as 10001:10001 too)
USER 10001:10001

# `headrace up` keeps its embedded NATS store and admin token here; the default config
# listens on 0.0.0.0:8080 (compose.yaml passes -c /config/config.yaml instead).
ENV HEADRACE_STATE_DIR=/data \
    HEADRACE_CONFIG=/app/deploy/standalone.yaml
VOLUME ["/data"]
EXPOSE 8080

ENTRYPOINT ["headrace"]
CMD ["up"]
