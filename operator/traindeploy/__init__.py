"""TrainDeploy: one custom resource that takes a model from code to production on Kubernetes."""

__version__ = "0.1.0"

GROUP = "traindeploy.io"
VERSION = "v1alpha1"
PLURAL = "traindeploys"
KIND = "TrainDeploy"
