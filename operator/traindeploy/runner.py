"""Starts the kopf operator with TrainDeploy's handlers."""

from __future__ import annotations

import asyncio
import logging


def run_operator(namespaces: list[str], liveness: str | None, verbose: bool) -> int:
    import kopf

    import traindeploy.handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces or None,
        liveness_endpoint=liveness,
        # One replica with a Recreate strategy: no peering objects to install or coordinate.
        standalone=True,
    ))
    return 0
