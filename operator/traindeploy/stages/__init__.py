"""One module per stage of a training cycle, each a `STAGE` (see base.py) whose `run(pass)`
returns a result. The driver (`traindeploy.reconciler`) holds their order; serving, the last
stage, is its own package (`traindeploy.serving`)."""
