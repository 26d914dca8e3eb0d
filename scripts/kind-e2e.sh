#!/usr/bin/env bash
# The end-to-end recipe for people with Docker: a kind cluster with the Training Operator, KServe
# in Standard mode with its MLServer runtime, an MLflow server, the operator and example trainer
# images built here and loaded, the chart installed, and the minimal example taken to a served
# prediction. Needs docker, kind, kubectl and helm on PATH, and network access to fetch the
# upstream releases. Not run by `make test` (no Docker there); CI runs it in
# .github/workflows/kind-e2e.yaml.
#
#   scripts/kind-e2e.sh            # KEEP_CLUSTER=1 keeps the cluster afterwards
set -euo pipefail

CLUSTER="${CLUSTER:-traindeploy}"
TRAINING_OPERATOR_VERSION="${TRAINING_OPERATOR_VERSION:-v1.9.2}"
KSERVE_VERSION="${KSERVE_VERSION:-v0.20.0}"
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.19.1}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TIMEOUT="${TIMEOUT:-900s}"

log() { printf '==> %s\n' "$*"; }

cleanup() {
  if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is not on PATH" >&2; exit 2; }
done

log "Creating kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --wait 120s

log "Installing the Training Operator $TRAINING_OPERATOR_VERSION"
kubectl apply --server-side -k \
  "github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=$TRAINING_OPERATOR_VERSION"
kubectl -n kubeflow rollout status deployment/training-operator --timeout="$TIMEOUT"

log "Installing cert-manager $CERT_MANAGER_VERSION (KServe's webhooks need it)"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
kubectl -n cert-manager rollout status deployment/cert-manager-webhook --timeout="$TIMEOUT"

log "Installing KServe $KSERVE_VERSION in Standard mode with its serving runtimes (MLServer for mlflow)"
helm install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd --version "$KSERVE_VERSION" --wait
helm install kserve oci://ghcr.io/kserve/charts/kserve --version "$KSERVE_VERSION" \
  --namespace kserve --create-namespace --wait \
  --set kserve.controller.deploymentMode=Standard
kubectl get clusterservingruntime kserve-mlserver

log "Starting MLflow"
kubectl apply -f "$REPO/deploy/kind/mlflow.yaml"
kubectl -n mlflow rollout status deployment/mlflow --timeout="$TIMEOUT"

log "Building the operator and the example trainer, and loading them into kind"
docker build -t traindeploy-operator:kind "$REPO"
docker build -t traindeploy-example-trainer:kind "$REPO/examples/trainer"
kind load docker-image --name "$CLUSTER" traindeploy-operator:kind traindeploy-example-trainer:kind

log "Installing the chart"
helm install traindeploy "$REPO/charts/traindeploy-operator" --namespace traindeploy-system \
  --create-namespace --values "$REPO/deploy/kind/operator-values.yaml" --wait

log "Applying the minimal example"
kubectl apply -f "$REPO/deploy/kind/minimal-kind.yaml"
kubectl -n mlflow wait --for=condition=Ready td/churn --timeout="$TIMEOUT"
kubectl -n mlflow get td,pytorchjobs,inferenceservices

log "Asking the served model for a prediction"
kubectl -n mlflow port-forward service/churn-predictor 18080:80 >/dev/null 2>&1 &
forward=$!
trap 'kill "$forward" 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 30); do
  curl -sf http://127.0.0.1:18080/v2/models/churn/ready >/dev/null && break
  sleep 2
done
data=$(python3 -c 'print(",".join(["0.1"] * 16))')
curl -sf -H 'Content-Type: application/json' http://127.0.0.1:18080/v2/models/churn/infer \
  -d "{\"inputs\": [{\"name\": \"input-0\", \"shape\": [1, 16], \"datatype\": \"FP32\", \"data\": [$data]}]}"
echo
log "Done: the minimal example trained, registered and served on kind"
