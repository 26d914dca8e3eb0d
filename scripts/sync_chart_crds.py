#!/usr/bin/env python3
"""Copies the CRDs from crds/ (the single source of truth) into the Helm chart.

The chart renders its CRD template from charts/traindeploy-operator/crds-source/, which must be a
byte-for-byte copy of crds/. Run this after editing a CRD:

    python3 scripts/sync_chart_crds.py           # copy (and remove copies whose source is gone)
    python3 scripts/sync_chart_crds.py --check   # exit 1 and name the files that differ

tests/packaging/test_chart.py fails while the two disagree, so CI catches a forgotten sync.
Standard library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE = REPO_ROOT / "crds"
TARGET = REPO_ROOT / "charts" / "traindeploy-operator" / "crds-source"
PATTERN = "*.yaml"


def differences(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    """What a sync would change, one line each; empty when the chart's copy is current."""
    wanted = {path.name: path.read_bytes() for path in sorted(source.glob(PATTERN))}
    present = {path.name: path.read_bytes() for path in sorted(target.glob(PATTERN))} if target.is_dir() else {}
    changes = [f"missing: {name}" for name in wanted if name not in present]
    changes += [f"differs: {name}" for name in wanted if name in present and present[name] != wanted[name]]
    changes += [f"stale: {name}" for name in present if name not in wanted]
    return changes


def sync(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    changes = differences(source, target)
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob(PATTERN)):
        copy = target / path.name
        if not copy.exists() or copy.read_bytes() != path.read_bytes():
            copy.write_bytes(path.read_bytes())
    for copy in sorted(target.glob(PATTERN)):
        if not (source / copy.name).exists():
            copy.unlink()
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if out of date")
    args = parser.parse_args(argv)
    source, target = SOURCE.relative_to(REPO_ROOT), TARGET.relative_to(REPO_ROOT)
    if args.check:
        changes = differences()
        for change in changes:
            print(f"{target}: {change}", file=sys.stderr)
        if changes:
            print("run: python3 scripts/sync_chart_crds.py", file=sys.stderr)
        return 1 if changes else 0
    changes = sync()
    for change in changes:
        print(f"{target}: synced ({change})")
    if not changes:
        print(f"{target} already matches {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
