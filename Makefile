# The two commands of the README's quick start:
#   make demo   - install everything, then run the mesh on examples/shop
#   make test   - install everything, then run lint, type checks and the whole test suite
# Set FAST=1 to skip the slow end-to-end tests locally (CI runs them all).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
APT_PACKAGES := golang-go nghttp2-client nghttp2-proxy protobuf-compiler curl iproute2 nftables tcpdump proxychains4 bind9-dnsutils

.PHONY: setup system-deps demo test lint typecheck unit bench clean

$(BIN)/ambient: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

system-deps:
	@scripts/install-system-deps.sh $(APT_PACKAGES)

setup: system-deps $(BIN)/ambient

demo: setup
	$(BIN)/ambient up examples/shop

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest $(if $(FAST),-m 'not slow',) $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/hbone.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
