"""kopf handlers for TrainDeploy. The reconcile logic lands with the API issue."""
