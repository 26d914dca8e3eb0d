{{/*
The operator's permissions, least privilege: exactly the verbs and resources it uses, never a
wildcard, and a comment above each rule saying who needs it and why. They come from kopf's
behaviour (kopf 1.4x: watches, finalizers, annotations, Events, discovery) and from the
operator's own calls (operator/traindeploy/kube.py and its callers).

tests/packaging/test_chart.py checks that no rule has "*" and that every rule has a comment, and
runs the operator end to end as a ServiceAccount bound to exactly these rules.
*/}}

{{/* Rules on namespaced resources: a ClusterRole when watching the whole cluster, a Role in each
watched namespace otherwise. */}}
{{- define "traindeploy-operator.rules.namespaced" -}}
# kopf lists and watches TrainDeploys, and patches them to add and remove its finalizer
# (traindeploy.io/finalizer) and to record the last handled spec in an annotation. The operator
# reads one again when its watch lags behind a status write, or after a write conflict.
- apiGroups: ["traindeploy.io"]
  resources: ["traindeploys"]
  verbs: ["get", "list", "watch", "patch"]
# The operator replaces the whole status of each TrainDeploy on the status subresource, with the
# resourceVersion it was computed from (Kube.replace_status: a PUT, refused with 409 if stale).
- apiGroups: ["traindeploy.io"]
  resources: ["traindeploys/status"]
  verbs: ["update"]
# Children carry an owner reference with blockOwnerDeletion: clusters that enforce owner
# reference permissions (the OwnerReferencesPermissionEnforcement admission plugin, on by default
# in OpenShift) require update on the owner's finalizers to create them.
- apiGroups: ["traindeploy.io"]
  resources: ["traindeploys/finalizers"]
  verbs: ["update"]
# PyTorchJobs (training) and Katib Experiments (tuning): the operator reads, creates and patches
# them by their deterministic names and deletes those of a superseded or timed-out cycle; kopf
# lists and watches them to wake the owning TrainDeploy when their status changes.
- apiGroups: ["kubeflow.org"]
  resources: ["pytorchjobs", "experiments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Katib Trials: when an Experiment ends, the operator deletes the Trials it still lists as running
# or pending (Katib leaves them running; their jobs hold GPUs) before final training starts. By
# name, from the Experiment's status; never listed or created.
- apiGroups: ["kubeflow.org"]
  resources: ["trials"]
  verbs: ["delete"]
# Kubeflow Trainer TrainJobs (training.backend: TrainJob): the same as PyTorchJobs.
- apiGroups: ["trainer.kubeflow.org"]
  resources: ["trainjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Kubeflow Trainer TrainingRuntimes: a TrainJob naming a namespaced runtime (spec.training.runtimeRef)
# has it read by name, to find the runtime's trainer step (the replicated job that runs the trainer).
- apiGroups: ["trainer.kubeflow.org"]
  resources: ["trainingruntimes"]
  verbs: ["get"]
# KServe InferenceServices (serving): read, create and patch the served model; delete the canary
# service when a rollout ends; kopf watches them to notice readiness.
- apiGroups: ["serving.kserve.io"]
  resources: ["inferenceservices"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Deployments: in KServe Standard mode the operator reads the predictor Deployment KServe made
# ("<isvc>-predictor") to learn whether a new model version runs on all replicas; KServe keeps the
# InferenceService Ready through a rolling update. Read by name only.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get"]
# Gateway API HTTPRoutes: the canary rollout in KServe Standard mode splits traffic between the
# stable and the canary InferenceService with an HTTPRoute it creates, patches and deletes.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Pods of a training job that has not started: listed by the label the Training Operator or
# JobSet puts on them, to tell in the TrainDeploy's condition why they cannot be scheduled (the
# scheduler's PodScheduled message, e.g. not enough GPUs). Read only; never watched.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Secrets named in a TrainDeploy (spec.mlflow.credentialsSecretRef, spec.pipeline.tokenSecretRef):
# read one by name when needed; never listed or watched, so no other Secret is ever fetched.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# ConfigMaps named in a TrainDeploy (spec.pipeline.package.configMapKeyRef): the compiled
# pipeline to submit to KFP, read by name.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
# Events: kopf posts the operator's stage transitions and handler outcomes as core v1 Events
# on the TrainDeploy. It only creates them; it never reads or updates them.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* Cluster-scoped reads kopf and the operator need in either mode. */}}
{{- define "traindeploy-operator.rules.discovery" -}}
# kopf's resource discovery: it lists and watches CustomResourceDefinitions to learn when the
# watched kinds (TrainDeploy and the child kinds) appear, change or go away.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# The operator reads the served TrainJob CRD once per process, by name, to learn which optional
# spec fields the cluster's Trainer has (runtimePatches and activeDeadlineSeconds came in v2.2).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  resourceNames: ["trainjobs.trainer.kubeflow.org"]
  verbs: ["get"]
# Kubeflow Trainer ClusterTrainingRuntimes (cluster-scoped): a TrainJob's runtime is read by name to
# find its trainer step (`node` in torch-distributed, `launcher` in deepspeed-distributed).
- apiGroups: ["trainer.kubeflow.org"]
  resources: ["clustertrainingruntimes"]
  verbs: ["get"]
{{- end }}

{{/* Cluster-scoped reads kopf needs only when it watches a list of namespaces. */}}
{{- define "traindeploy-operator.rules.namespaces" -}}
# When watching a list of namespaces, kopf lists and watches Namespaces to serve each listed
# one only while it exists (and to notice one created after the operator started).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}

{{/* Leader election (replicas > 1 or leaderElection.enabled): a Role in the release namespace. */}}
{{- define "traindeploy-operator.rules.leaderElection" -}}
# Replicas read and renew the leader Lease by its name (traindeploy/leader.py); the holder
# writes itself into it with the resourceVersion it read, so two cannot both take it.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ .Values.leaderElection.leaseName | quote }}]
  verbs: ["get", "update"]
# The first replica creates the Lease (create cannot be limited to a name).
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
{{- end }}
