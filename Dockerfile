# chaosstream: the chaos proxy, the mock model and the Toxiproxy-compatible API in one image.
# docker build -t chaosstream . && docker run --rm -p 8080:8080 chaosstream
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Metadata first, so a code change does not invalidate the dependency layer.
COPY pyproject.toml README.md ./
COPY chaosstream ./chaosstream
# Optional extras, comma-separated: docker-compose.otel.yml builds with EXTRAS=otel.
ARG EXTRAS=""
RUN pip install ".${EXTRAS:+[$EXTRAS]}" && useradd --create-home --uid 10001 chaos

USER chaos
# 8080 proxy, 9090 control API (+ /metrics), 8000 mock model.
EXPOSE 8080 9090 8000
# GET /~health on the proxy port: 200 while every worker runs (docs/fleet.md).
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/~health', timeout=2)"]
ENTRYPOINT ["chaosstream"]
# Two proxy processes behind 8080, a scope always on the same one; size with --workers.
CMD ["proxy", "--listen", "0.0.0.0:8080", "--workers", "2"]
