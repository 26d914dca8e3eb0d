"""What the operator knows about the Secrets a TrainDeploy names: the MLflow credential keys and
how Secret data is decoded. One home for both, shared by the Kubernetes client, the MLflow client
and the training job's environment."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

# The keys of a credentials Secret that MLflow's client reads from the environment, in its order.
MLFLOW_SECRET_KEYS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


class SecretDataInvalid(ValueError):
    """A Secret value is not base64-encoded UTF-8. Names the key, never the value."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Secret key {key} is not base64-encoded UTF-8")
        self.key = key


def decode_data(data: Mapping[str, str] | None, keys: tuple[str, ...] | None = None) -> dict[str, str]:
    """A Secret's `.data` (base64 values) decoded; only `keys` when given."""
    decoded = {}
    for key, raw in (data or {}).items():
        if keys is not None and key not in keys:
            continue
        try:
            decoded[key] = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise SecretDataInvalid(key) from None
    return decoded


def surrounding_whitespace(value: str) -> bool:
    """A value made with `echo` (a trailing newline) or pasted with spaces around it."""
    return value != value.strip()
