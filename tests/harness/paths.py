"""Where the harness finds the repository, its cache and the upstream CRDs."""

from __future__ import annotations

import os
from pathlib import Path

from traindeploy.dev.venvs import cache_dir  # noqa: F401 - the harness shares the dev cache

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTROLPLANE_MODULE = REPO_ROOT / "tests" / "controlplane"
# The upstream tier's Go wrapper modules, one per upstream project (their library versions differ).
KWOK_MODULE = REPO_ROOT / "tests" / "upstream" / "kwok"
TRAINING_OPERATOR_MODULE = REPO_ROOT / "tests" / "upstream" / "training-operator"
KATIB_MODULE = REPO_ROOT / "tests" / "upstream" / "katib"
KSERVE_MODULE = REPO_ROOT / "tests" / "upstream" / "kserve"
TRAINER_MODULE = REPO_ROOT / "tests" / "upstream" / "trainer"
OUR_CRDS = REPO_ROOT / "crds"

UPSTREAM_CRDS_ENV = "TRAINDEPLOY_UPSTREAM_CRDS"
WORKSPACE_UPSTREAM_CRDS = Path("/work/shared/crds/upstream")


def upstream_crds_dir() -> Path:
    """The upstream child CRDs are test data kept outside the project (see PROVENANCE.md there).

    `$TRAINDEPLOY_UPSTREAM_CRDS` wins; otherwise the nearest `shared/crds/upstream` beside the
    checkout or one of its parents, then the workspace's copy.
    """
    configured = os.environ.get(UPSTREAM_CRDS_ENV)
    if configured:
        path = Path(configured)
        if not path.is_dir():
            raise FileNotFoundError(f"${UPSTREAM_CRDS_ENV}={configured} is not a directory")
        return path
    for parent in REPO_ROOT.parents:
        candidate = parent / "shared" / "crds" / "upstream"
        if candidate.is_dir():
            return candidate
    # A clone made elsewhere (CI clones into a scratch directory) still finds the workspace's copy.
    if WORKSPACE_UPSTREAM_CRDS.is_dir():
        return WORKSPACE_UPSTREAM_CRDS
    raise FileNotFoundError(
        f"upstream CRDs not found beside {REPO_ROOT}; set ${UPSTREAM_CRDS_ENV} to their directory")
