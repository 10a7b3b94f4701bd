# The two commands of the README's quick start:
#   make demo   - install everything, then run the mesh on examples/shop
#   make test   - install everything, then run lint, type checks and the whole test suite
# Set FAST=1 to skip the slow end-to-end tests locally (CI runs them all).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
APT_PACKAGES := nghttp2-client nghttp2-proxy protobuf-compiler curl iproute2 nftables tcpdump proxychains4 bind9-dnsutils prometheus chromium

.PHONY: setup system-deps go-check crds kube-bins jaeger-bin demo test lint typecheck unit bench clean

$(BIN)/ambient: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

system-deps:
	@scripts/install-system-deps.sh $(APT_PACKAGES)

# Go (>= 1.26, the machine's own, e.g. /usr/local/go): the interop peers, the CRDs'
# modules and the dev cluster's binaries. Debian's golang-go is too old and not used.
go-check: $(BIN)/ambient
	@$(BIN)/python -c 'from ambient.gomod import find_go; g = find_go((1, 26)); print(f"Go: {g.path} ({g.version_text})")'

setup: system-deps $(BIN)/ambient

# Istio's and Gateway API's CRDs from their pinned Go modules, into ~/.cache/ambient/crds.
crds: setup go-check
	@$(BIN)/python -m ambient.install.crds

# The dev cluster's binaries (etcd, kube-*, kubectl) built once from pinned Go modules into
# ~/.cache/ambient/kube-*: the first build takes long (see the README), later runs are instant.
kube-bins: setup go-check
	@scripts/dev-cluster build

# Jaeger (the tracing tests' backend) built once from its pinned Go module into
# ~/.cache/ambient/jaeger-*: about 15 minutes the first time, instant afterwards.
jaeger-bin: setup go-check
	@$(BIN)/python -m ambient.devcluster.jaeger

demo: setup
	$(BIN)/ambient up examples/shop

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: setup
	$(BIN)/mypy

test: lint typecheck crds $(if $(FAST),,kube-bins jaeger-bin)
	$(BIN)/pytest $(if $(FAST),-m 'not slow',) $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/hbone.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
