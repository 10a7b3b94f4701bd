# The mesh's one image: the `ambient` command, which each workload of
# `ambient install --profile ambient` runs (controlplane, ztunnel, node-agent).
#
#   docker build -t ambient:0.1.0 .        # then push it where the cluster pulls from,
#   ambient install --profile ambient --image REGISTRY/ambient:0.1.0
#
# Not built by the test suite (no container runtime there): see docs/kubernetes.md,
# "A real cluster", for what is checked and what is not.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# A plain (not editable) install of the project and its dependencies, wheels only.
RUN pip install --no-cache-dir --root-user-action=ignore --only-binary=:all: \
        --prefix=/install .

FROM ${PYTHON_IMAGE}
# ip and nft: the node agent programs pods' namespaces with them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 nftables \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /install /usr/local
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Root by default: ztunnel and the node agent need NET_ADMIN/SYS_ADMIN in their pods;
# the control plane's Deployment runs it as user 1337 (its securityContext).
ENTRYPOINT ["ambient"]
CMD ["--help"]
