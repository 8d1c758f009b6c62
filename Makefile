# The two commands a new machine needs: `make demo` and `make test`. Both install first.
# uv manages the environment (.venv); the CPU build of vLLM is the default here.
# On a GPU machine: `make install EXTRA=gpu`.
SHELL := /bin/bash
EXTRA ?= cpu
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen --no-sync --extra $(EXTRA)
PYTEST_ARGS ?=

.PHONY: install demo test test-unit browser k8s-tools clean help

help:
	@echo "make demo   - install, start vLLM (CPU) on the tiny model, send image requests, stop"
	@echo "make test   - install, then unit + end-to-end tests against a real vLLM CPU server"
	@echo "make install [EXTRA=cpu|gpu] - create .venv (idempotent)"

install: .venv/.installed-$(EXTRA)

.venv/.installed-$(EXTRA): pyproject.toml uv.lock clients/pyproject.toml
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		python3 -m pip install --quiet uv
	$(UV) sync --frozen --extra $(EXTRA) --group dev
	@rm -f .venv/.installed-*
	@touch $@

demo: install
	$(RUN) qvl demo

test: install browser k8s-tools
	$(RUN) pytest $(PYTEST_ARGS)

# headless Chromium for the report test (Debian/Ubuntu; root or sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

# kubectl (its built-in kustomize renders the k8s overlays in the tests; no cluster is used).
# Needs kustomize >= 5 (components, labels): Debian's own kubernetes-client 1.20 is too old, so
# this takes the `kubectl` package of the Kubernetes or Google Cloud apt repository.
k8s-tools:
	@command -v kubectl >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq kubectl; } \
		|| { echo "kubectl not found: install it (https://kubernetes.io/docs/tasks/tools/)"; exit 1; }

test-unit: install k8s-tools
	$(RUN) pytest -m "not e2e" $(PYTEST_ARGS)

clean:
	rm -rf .venv .models .runs .pytest_cache
