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

# `make run` shows the operator at work on this machine: a local control plane, MLflow and the
# operator, examples/traindeploys/minimal.yaml applied, and labelled stand-ins playing the Training
# Operator, the trainer and KServe, until Ctrl-C (see tests/harness/local_run.py).
# RUN_ARGS passes options, e.g. make run RUN_ARGS=--exit-when-ready
.PHONY: run
RUN_ARGS ?=
run: tools
	$(PY) -m harness.local_run $(RUN_ARGS)

# Benchmarks print their figures against a baseline measured in the same run (not part of make test).
.PHONY: bench
bench: tools
	$(PY) bench/idle_api_load.py --counts 10 100 --window 20

venv: $(VENV)/.installed

# Reinstalled when the project's dependencies change.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

clean-venv:
	rm -rf $(VENV)
