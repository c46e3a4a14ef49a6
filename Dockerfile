# melanoma serve: the REST service for a model exported with `melanoma export RUN_DIR --out model/`.
#   docker build -t melanoma-serve .
#   docker run --rm -p 127.0.0.1:8000:8000 -v "$PWD/model:/model:ro" melanoma-serve
# Inside the container the service binds 0.0.0.0 (the container's own network); the -p mapping above publishes
# it on the host's localhost only. Uploads are never written to disk; the root file system can be read-only.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2 KERAS_HOME=/tmp/keras MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[cpu,serve]" && useradd --create-home --uid 10001 melanoma

USER melanoma
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
ENTRYPOINT ["melanoma", "serve", "--model", "/model", "--host", "0.0.0.0", "--port", "8000"]
