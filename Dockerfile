# syntax=docker/dockerfile:1
# The TrainDeploy operator image.
#
#   docker build -t traindeploy-operator:dev .
#
# Two stages: `build` turns this project into a wheel and installs it, with its runtime
# dependencies only (no [test] extra), into a virtualenv at /opt/traindeploy; the final stage is
# a slim Python that receives nothing but that virtualenv and runs it as a non-root user. No
# compiler, no pip cache, no sources and no tests reach the final image.
# tests/packaging/test_dockerfile.py checks these properties without a Docker engine.

# One base for both stages: the virtualenv's interpreter links to /usr/local/bin/python3.11.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/traindeploy
WORKDIR /src
# Only what building the wheel needs (.dockerignore keeps the rest of the tree out).
COPY pyproject.toml README.md ./
COPY operator/ operator/
# The wheel first, then install it: the image gets exactly what `pip install traindeploy` gets.
# Every runtime dependency ships pure-Python or manylinux wheels, so no compiler is needed here.
# pip and setuptools leave the virtualenv afterwards: installers are of no use at run time.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/traindeploy/bin/pip install /wheels/traindeploy-*.whl \
 && /opt/traindeploy/bin/pip uninstall --yes pip setuptools \
 && /opt/traindeploy/bin/traindeploy --version

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/traindeploy/traindeploy
LABEL org.opencontainers.image.title="traindeploy-operator" \
      org.opencontainers.image.description="Kubernetes operator that takes a model from code to production: KFP, Katib, PyTorchJob, MLflow, KServe." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.vendor="TrainDeploy"
COPY --from=build /opt/traindeploy /opt/traindeploy
# The root filesystem is read-only in the Helm chart: write no bytecode, and flush logs at once.
ENV PATH=/opt/traindeploy/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric user (as "nonroot" in distroless) so that runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
WORKDIR /tmp
# kopf's liveness endpoint: `traindeploy run` serves http://0.0.0.0:8080/healthz by default;
# the Prometheus metrics are on 8081 (/metrics).
EXPOSE 8080 8081
ENTRYPOINT ["traindeploy", "run"]
