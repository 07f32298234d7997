# syntax=docker/dockerfile:1.7
# rudder: multi-stage build, non-root, read-only-root-filesystem friendly.
# Base images are pinned by version; pin by digest in your own registry mirror.

# kustomize's own Go code built for WASI: the module postRenderers[].kustomize runs in the
# same Extism sandbox as Wasm plugins (no kustomize binary in the image).
FROM golang:1.26.8-bookworm AS kustomize-wasm
WORKDIR /src
COPY wasm/kustomize ./
RUN GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags "-s -w" \
      -o /out/kustomize.wasm .

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY crds ./crds
RUN python -m venv /opt/rudder \
 && /opt/rudder/bin/pip install --upgrade pip \
 && /opt/rudder/bin/pip install .

FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="rudder" \
      org.opencontainers.image.description="HelmRelease operator: OCI charts by digest, server-side apply, Helm-compatible releases" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 rudder \
 && useradd --system --uid 10001 --gid rudder --no-create-home --shell /usr/sbin/nologin rudder
COPY --from=build /opt/rudder /opt/rudder
COPY crds /opt/rudder/crds
# The default of --kustomize-module.
COPY --from=kustomize-wasm /out/kustomize.wasm /usr/local/lib/rudder/kustomize.wasm
ENV PATH=/opt/rudder/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["rudder"]
CMD ["run"]
