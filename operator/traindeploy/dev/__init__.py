"""`traindeploy dev`: the whole lifecycle on one machine, no cluster needed.

The operator runs unchanged (the production code path); only the controllers of its children are
replaced by local executors that do the real work as local processes and write child status the
way the upstream controllers do:

    jobs        PyTorchJob and TrainJob: the job's command on the host, one process per replica
    katib       Katib Experiment: trials as local processes, suggestions from Optuna
    kfp_endpoint  a local KFP v2beta1 REST endpoint that runs the compiled pipeline with kfp.local
    serving     InferenceService: storage initializer, MLServer per revision, a traffic router

`status/` holds the status each upstream controller writes, shared with the test stand-ins.
"""
