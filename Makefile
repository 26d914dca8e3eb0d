# `make test` takes a fresh machine to a passing test run: virtualenv and Python packages, the
# Go-built control plane (etcd, kube-apiserver, kube-controller-manager) and helm/kubectl. Every
# step is cached and idempotent; a warm machine goes straight to pytest.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
export PYTHONPATH := $(CURDIR)/tests

.PHONY: test tools venv clean-venv

test: tools
	$(PY) -m pytest $(PYTEST_ARGS)

tools: venv
	$(PY) -m harness.tools

venv: $(VENV)/.installed

# Reinstalled when the project's dependencies change.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

clean-venv:
	rm -rf $(VENV)
