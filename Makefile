# `make test` takes a fresh machine to a passing test run: virtualenv and Python packages, the
# Go-built control plane (etcd, kube-apiserver, kube-controller-manager) and helm/kubectl. Every
# step is cached and idempotent; a warm machine goes straight to pytest.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
export PYTHONPATH := $(CURDIR)/tests

.PHONY: test tools venv clean-venv

# Everything is installed before pytest starts; the tests themselves talk to 127.0.0.1 only.
test: tools
	$(VENV)/bin/lint-imports
	$(PY) -m harness.tools --test-tiers
	$(PY) -m pytest $(PYTEST_ARGS)

tools: venv
	$(PY) -m harness.tools

# `make run` is `traindeploy dev` on examples/traindeploys/minimal.yaml: a local control plane,
# MLflow and the operator, the example trained for real with PyTorch (CPU), registered, served by
# MLServer and answering a prediction; Ctrl-C stops it all. RUN_ARGS passes options, e.g.
# make run RUN_ARGS=--exit-when-ready, or RUN_ARGS=examples/traindeploys/full.yaml for another manifest.
.PHONY: run
RUN_ARGS ?= examples/traindeploys/minimal.yaml
run: tools
	$(VENV)/bin/traindeploy dev $$($(PY) -m harness.tools --dev-args) $(RUN_ARGS)

# The end-to-end recipe on a kind cluster, for machines with Docker (see scripts/kind-e2e.sh).
.PHONY: kind-e2e
kind-e2e:
	bash scripts/kind-e2e.sh

# Benchmarks print their figures against a baseline measured in the same run (not part of make test):
# bench/suite.py (fan-in, requests per lifecycle, idle, memory, CPU, restart; see its docstring) and
# bench/idle_api_load.py. BENCH_ARGS passes options, e.g. make bench BENCH_ARGS='--counts 100 300 1000'.
.PHONY: bench
BENCH_ARGS ?= --counts 100 300 --window 30
bench: tools
	PYTHONPATH=$(CURDIR)/operator:$(CURDIR)/tests $(PY) bench/suite.py $(BENCH_ARGS)
	$(PY) bench/idle_api_load.py --counts 10 100 --window 20

venv: $(VENV)/.installed

# Reinstalled when the project's dependencies change.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev,bench]'
	touch $@

clean-venv:
	rm -rf $(VENV)
