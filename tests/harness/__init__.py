"""Test harness: the real parts the tests stand on.

- `controlplane`: etcd + kube-apiserver + kube-controller-manager built from the Go module proxy.
- `mlflow_server`: a real `mlflow server` with a SQLite backend on loopback.
- `tools`: builds and caches those binaries, and fetches real helm and kubectl.

Each module is usable from pytest fixtures and from the command line (`python -m harness ...`).
"""
