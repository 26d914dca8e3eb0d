"""The example trainer: a small PyTorch classifier that a TrainDeploy trains, tunes and ships.

What it expects from its surroundings, and what it gives back:

- Hyperparameters arrive as `--<name>=<value>` arguments (the operator and Katib write them that
  way). Known: lr, epochs, batch_size, hidden, seed, samples, device. Others are ignored with a
  warning, so a search space may carry names this script does not use.
- Distributed when WORLD_SIZE > 1: the Training Operator (PyTorchJob) and torchrun set
  MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK. Kubeflow Trainer v2 sets PET_* for torchrun;
  started without torchrun, one process per node is derived from them. gloo on CPU, nccl on GPU.
- The data set is synthetic: Gaussian clusters, two per class, the same for a given seed on
  every rank and every restart, so a run needs no download and its accuracy means something.
- Rank 0 prints one line per epoch in Katib's StdOut metrics format
  (`epoch=3 loss=0.2100 val_loss=0.2500 accuracy=0.9300`) and nothing else on stdout.
- Rank 0 logs params, per-epoch metrics and the model (an MLflow 3 LoggedModel named `model`) to
  MLflow through MLFLOW_TRACKING_URI, continuing MLFLOW_RUN_ID when the operator made the run, else
  starting one in MLFLOW_EXPERIMENT_NAME. Credentials come from MLFLOW_TRACKING_TOKEN or
  MLFLOW_TRACKING_USERNAME/PASSWORD, read by the MLflow client itself and never printed.
  Without MLFLOW_TRACKING_URI nothing is logged (handy for a local try).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import mlflow
import mlflow.pytorch
import numpy as np
import torch
import torch.distributed as dist
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

FEATURES = 16
CLASSES = 4
CLUSTERS_PER_CLASS = 2
# How far apart the cluster centres lie, in units of the clusters' own spread: at 1.2 a little
# overlap remains, so accuracy tops out near 0.97-0.99 instead of a trivial 1.0.
CENTER_SPREAD = 1.2
VALIDATION_FRACTION = 0.2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", "--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--hidden", type=int, default=64, help="width of the two hidden layers")
    parser.add_argument("--seed", type=int, default=7, help="seeds the data set and the weights")
    parser.add_argument("--samples", type=int, default=4000, help="rows in the synthetic data set")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"train.py: ignoring unknown arguments: {' '.join(unknown)}", file=sys.stderr)
    return args


def synthetic_dataset(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters, two per class at random places: learnable, but not by a linear model."""
    generator = torch.Generator().manual_seed(seed)
    centers = CENTER_SPREAD * torch.randn(CLUSTERS_PER_CLASS * CLASSES, FEATURES, generator=generator)
    cluster = torch.randint(len(centers), (samples,), generator=generator)
    x = centers[cluster] + torch.randn(samples, FEATURES, generator=generator)
    return x, cluster % CLASSES


def classifier(hidden: int) -> nn.Sequential:
    """Two hidden ReLU layers, stock modules only."""
    return nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, CLASSES))


def distributed_env(env: dict[str, str]) -> dict[str, str]:
    """MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK, as PyTorchJob and torchrun set them, or
    derived from Trainer v2's PET_* (one process per node) when the script runs without torchrun."""
    if "WORLD_SIZE" in env or "PET_NNODES" not in env:
        return {}
    return {"WORLD_SIZE": env["PET_NNODES"], "RANK": env.get("PET_NODE_RANK", "0"),
            "MASTER_ADDR": env.get("PET_MASTER_ADDR", "127.0.0.1"),
            "MASTER_PORT": env.get("PET_MASTER_PORT", "29500")}


def pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y).item()
        accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    model.train()
    return loss, accuracy


def mlflow_run():
    """Continues the run the operator made (MLFLOW_RUN_ID), else starts one in MLFLOW_EXPERIMENT_NAME.

    The tracking URI and credentials (MLFLOW_TRACKING_TOKEN, or _USERNAME and _PASSWORD) are read
    from the environment by the MLflow client itself; this script never prints them.
    """
    # stdout carries the metrics for Katib; MLflow would print the run's URL there.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    run_id = os.environ.get("MLFLOW_RUN_ID") or None
    if run_id is None and os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
    run = mlflow.start_run(run_id=run_id)
    print(f"train.py: logging to MLflow run {run.info.run_id}", file=sys.stderr)
    return run  # as a context manager it ends the run FINISHED, or FAILED on an exception


def log_model(model: nn.Module, example: torch.Tensor) -> None:
    """Logs `model` followed by softmax as the LoggedModel `model`, so that what the operator
    registers and KServe serves answers with class probabilities.

    MLflow 3 saves it with torch.export ("pt2"), which loads without unpickling code; that format
    needs an input example to trace and a tensor signature (written out: inferring one needs scipy).
    """
    served = nn.Sequential(model, nn.Softmax(dim=1)).cpu().eval()
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), (-1, FEATURES))]),
                               outputs=Schema([TensorSpec(np.dtype("float32"), (-1, CLASSES))]))
    info = mlflow.pytorch.log_model(served, name="model", input_example=example.cpu().numpy(),
                                    signature=signature, serialization_format="pt2",
                                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
    print(f"train.py: logged model {info.model_id}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.update(distributed_env(dict(os.environ)))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed = world_size > 1
    if distributed:
        # env:// reads MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")

    torch.manual_seed(args.seed)
    x, y = synthetic_dataset(args.samples, args.seed)
    split = int(len(x) * (1 - VALIDATION_FRACTION))
    train_set = TensorDataset(x[:split], y[:split])
    x_val, y_val = x[split:].to(device), y[split:].to(device)
    sampler = (DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=args.seed)
               if distributed else None)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, shuffle=sampler is None,
                        generator=torch.Generator().manual_seed(args.seed))

    net = classifier(args.hidden).to(device)
    if distributed:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        model = net
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    tracking = rank == 0 and bool(os.environ.get("MLFLOW_TRACKING_URI"))
    if rank == 0 and not tracking:
        print("train.py: MLFLOW_TRACKING_URI is not set; not logging to MLflow", file=sys.stderr)
    with mlflow_run() if tracking else contextlib.nullcontext():
        if tracking:
            mlflow.log_params({"lr": args.lr, "epochs": args.epochs, "batch_size": args.batch_size,
                               "hidden": args.hidden, "seed": args.seed, "samples": args.samples,
                               "world_size": world_size, "device": device.type})
        started = time.monotonic()
        for epoch in range(1, args.epochs + 1):
            if sampler is not None:
                sampler.set_epoch(epoch)
            loss_sum, rows = 0.0, 0
            for xb, yb in loader:
                xb, yb = xb.to(device), yb.to(device)
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(xb), yb)
                loss.backward()
                optimizer.step()
                loss_sum, rows = loss_sum + loss.item() * len(yb), rows + len(yb)
            totals = torch.tensor([loss_sum, float(rows)], device=device)
            if distributed:
                dist.all_reduce(totals)
            train_loss = (totals[0] / totals[1]).item()
            # Every rank holds the same weights, so each can score the whole validation set.
            val_loss, accuracy = evaluate(net, x_val, y_val)
            if rank == 0:
                print(f"epoch={epoch} loss={train_loss:.4f} val_loss={val_loss:.4f} accuracy={accuracy:.4f}",
                      flush=True)
            if tracking:
                mlflow.log_metrics({"loss": train_loss, "val_loss": val_loss, "accuracy": accuracy}, step=epoch)
        if rank == 0:
            print(f"train.py: {args.epochs} epochs in {time.monotonic() - started:.1f}s on {world_size} "
                  f"process(es), {device}", file=sys.stderr)
        if tracking:
            log_model(net, x_val[:5])

    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
