"""Data preparation before training: a Kubeflow Pipelines v2 pipeline of two lightweight components.

    make_dataset(rows, source) -> dataset (CSV) -> check_dataset(dataset, rows) -> row count

`source` is `synthetic` (rows generated like the example trainer's data: Gaussian clusters, two
per class) or an http(s) URL of a CSV whose last column is the label; `rows` caps what is kept.

prep_pipeline.yaml beside this file is its compiled package, checked in so a ConfigMap can be made
from it without the SDK (tests/trainer/test_pipeline_compiles.py keeps the two equal):

    pip install -r examples/pipelines/requirements.txt
    python examples/pipelines/prep_pipeline.py            # rewrites prep_pipeline.yaml
    kubectl create configmap prep-pipeline --from-file=pipeline.yaml=examples/pipelines/prep_pipeline.yaml

and the TrainDeploy points at it:

    pipeline:
      package: {configMapKeyRef: {name: prep-pipeline, key: pipeline.yaml}}
      parameters: {rows: 4000, source: synthetic}
"""

# No `from __future__ import annotations`: the KFP SDK reads the annotations as real types.
import sys
from pathlib import Path

from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Output

BASE_IMAGE = "python:3.12-slim"


@dsl.component(base_image=BASE_IMAGE)
def make_dataset(rows: int, source: str, dataset: Output[Dataset]):
    """Writes up to `rows` labelled rows as CSV (features f0..f15, then label)."""
    import csv
    import io
    import itertools
    import random
    import urllib.request

    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    if source == "synthetic":
        features, classes, clusters_per_class = 16, 4, 2
        rng = random.Random(7)
        centers = [[rng.gauss(0, 1.2) for _ in range(features)] for _ in range(classes * clusters_per_class)]
        header = [f"f{i}" for i in range(features)] + ["label"]
        body = []
        for _ in range(rows):
            cluster = rng.randrange(len(centers))
            body.append([round(c + rng.gauss(0, 1), 6) for c in centers[cluster]] + [cluster % classes])
    elif source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=60) as response:
            reader = csv.reader(io.StringIO(response.read().decode("utf-8")))
            header, body = next(reader), list(itertools.islice(reader, rows))
    else:
        raise ValueError(f"source must be 'synthetic' or an http(s) URL, got {source!r}")
    with open(dataset.path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(body)
    dataset.metadata.update({"rows": len(body), "columns": len(header), "source": source})


@dsl.component(base_image=BASE_IMAGE)
def check_dataset(dataset: Input[Dataset], rows: int) -> int:
    """Fails the pipeline when the data set is empty, ragged or larger than asked; returns its rows."""
    import csv

    with open(dataset.path, newline="") as data:
        header, *body = list(csv.reader(data))
    if not body:
        raise ValueError("the data set has no rows")
    ragged = [index for index, row in enumerate(body, start=2) if len(row) != len(header)]
    if ragged:
        raise ValueError(f"{len(ragged)} rows do not have {len(header)} columns, first at line {ragged[0]}")
    if len(body) > rows:
        raise ValueError(f"the data set has {len(body)} rows, more than the {rows} asked for")
    return len(body)


@dsl.pipeline(name="traindeploy-prep", description="Prepares the training data set for a TrainDeploy.")
def prep_pipeline(rows: int = 4000, source: str = "synthetic"):
    made = make_dataset(rows=rows, source=source)
    check_dataset(dataset=made.outputs["dataset"], rows=rows)


def compile_to(path: Path) -> None:
    compiler.Compiler().compile(prep_pipeline, package_path=str(path))


if __name__ == "__main__":
    compile_to(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("prep_pipeline.yaml"))
