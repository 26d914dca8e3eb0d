"""Images as local code: what `traindeploy dev` runs where a cluster would pull an image.

A container engine is the one thing a laptop may lack, so each image the manifests name maps to a
directory of code and a requirements file (a `traindeploy-dev.yaml`, see examples/). A container
then runs as a local process: its command and args with the image's paths mapped onto the
directories, `python` (or `torchrun`, `pip`, ...) taken from a cached venv with the requirements
installed, its env with `secretKeyRef` and `configMapKeyRef` read from the cluster, as a kubelet
would resolve them.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from traindeploy.dev import venvs

CONFIG_NAME = "traindeploy-dev.yaml"
DEFAULT_MODEL_SERVER_REQUIREMENTS = Path(__file__).parent / "requirements" / "mlserver.txt"
# Commands a Python image runs from its interpreter's bin directory.
VENV_COMMANDS = {"python", "python3", "torchrun", "pip", "pip3"}


class ImageNotMapped(LookupError):
    """An image with no local code: the job cannot run here (the message says what to add)."""


class EnvSourceMissing(LookupError):
    """A secretKeyRef/configMapKeyRef whose object or key does not exist (not optional)."""


@dataclass(frozen=True)
class ImageMapping:
    image: str                       # repository, without tag or digest
    paths: Mapping[str, Path]        # path in the image -> local directory
    requirements: Path | None = None


@dataclass(frozen=True)
class DevConfig:
    images: tuple[ImageMapping, ...] = ()
    model_server_requirements: Path = DEFAULT_MODEL_SERVER_REQUIREMENTS
    model_server_base: Path | None = None  # requirements of the venv the model server builds on
    source: Path | None = None

    def mapping(self, image: str) -> ImageMapping:
        repository = repository_of(image)
        for mapping in self.images:
            if mapping.image == repository:
                return mapping
        known = ", ".join(m.image for m in self.images) or "none"
        raise ImageNotMapped(
            f"image {image!r} has no local code in {self.source or 'the dev config'} (mapped: {known}); "
            f"add it under images: with paths and requirements, or pass --image {repository}=DIR")

    def with_image(self, image: str, directory: Path, requirements: Path | None) -> "DevConfig":
        mapping = ImageMapping(repository_of(image), {"/app": directory}, requirements)
        return DevConfig((mapping, *(m for m in self.images if m.image != mapping.image)),
                         self.model_server_requirements, self.model_server_base, self.source)


def repository_of(image: str) -> str:
    """`ghcr.io/a/b:0.1` and `ghcr.io/a/b@sha256:...` -> `ghcr.io/a/b` (a registry port stays)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name


def load_config(path: Path | None) -> DevConfig:
    if path is None:
        return DevConfig()
    data = yaml.safe_load(path.read_text()) or {}
    base = path.parent

    def local(value: str | None) -> Path | None:
        return (base / value).resolve() if value else None

    images = tuple(ImageMapping(repository_of(item["image"]),
                                {inside: local(outside) for inside, outside in (item.get("paths") or {}).items()},
                                local(item.get("requirements")))
                   for item in data.get("images") or [])
    server = data.get("modelServer") or {}
    return DevConfig(images, local(server.get("requirements")) or DEFAULT_MODEL_SERVER_REQUIREMENTS,
                     local(server.get("base")), path)


def find_config(start: Path) -> Path | None:
    """The nearest traindeploy-dev.yaml in `start`'s directory or above it."""
    directory = start if start.is_dir() else start.parent
    for candidate in (directory, *directory.parents):
        if (candidate / CONFIG_NAME).is_file():
            return candidate / CONFIG_NAME
    return None


@dataclass
class LocalCommand:
    argv: list[str]
    env: dict[str, str]
    cwd: Path

    def shown(self) -> str:
        return shlex.join(self.argv)


# Reads a key of a Secret or ConfigMap: (kind, namespace, name, key) -> value or None.
KeyReader = Callable[[str, str, str, str], "str | None"]


@dataclass
class Resolver:
    config: DevConfig
    read_key: KeyReader
    python_for: Callable[[Path], Path] = field(default=lambda requirements: venvs.python_for(requirements))

    def command(self, container: Mapping, namespace: str, extra_env: Mapping[str, str] = ()) -> LocalCommand:
        """The local process for `container`: image paths mapped, interpreter from its venv."""
        mapping = self.config.mapping(container.get("image") or "")
        python = self.python_for(mapping.requirements) if mapping.requirements else None
        argv = [map_path(part, mapping.paths) for part in [*(container.get("command") or []),
                                                             *(container.get("args") or [])]]
        if not argv:
            raise ImageNotMapped(f"container {container.get('name')!r} of image {container.get('image')!r} "
                                 "has no command: the image's entrypoint cannot be run locally; set command")
        if python is not None and argv[0] in VENV_COMMANDS:
            argv[0] = str(python.with_name(argv[0]) if argv[0] not in ("python", "python3") else python)
        env = {**self.env(container, namespace), **dict(extra_env)}
        working = container.get("workingDir")
        cwd = Path(map_path(working, mapping.paths)) if working else next(iter(mapping.paths.values()), Path.cwd())
        return LocalCommand(argv, env, cwd)

    def env(self, container: Mapping, namespace: str) -> dict[str, str]:
        resolved: dict[str, str] = {}
        for item in container.get("env") or []:
            name = item["name"]
            if "value" in item:
                resolved[name] = item["value"] or ""
                continue
            source = item.get("valueFrom") or {}
            for kind, ref in (("Secret", source.get("secretKeyRef")), ("ConfigMap", source.get("configMapKeyRef"))):
                if ref is None:
                    continue
                value = self.read_key(kind, namespace, ref["name"], ref["key"])
                if value is None:
                    if ref.get("optional"):
                        break
                    raise EnvSourceMissing(f"env {name}: {kind} {namespace}/{ref['name']} has no key {ref['key']!r}")
                resolved[name] = value
        return resolved


def map_path(value: str, paths: Mapping[str, Path]) -> str:
    """`/app/train.py` -> `<dir>/train.py`; `--out=/app/x` keeps its flag; other values unchanged."""
    flag, separator, rest = value.partition("=") if value.startswith("-") else ("", "", value)
    for inside, outside in sorted(paths.items(), key=lambda item: -len(item[0])):
        root = inside.rstrip("/")
        if rest == root or rest.startswith(root + "/"):
            return f"{flag}{separator}{outside}{rest[len(root):]}"
    return value


def kube_key_reader(core_api) -> KeyReader:
    """Reads Secret and ConfigMap keys with a kubernetes CoreV1Api, as a kubelet resolves env."""
    from kubernetes.client.rest import ApiException

    def read(kind: str, namespace: str, name: str, key: str) -> str | None:
        try:
            if kind == "Secret":
                data = core_api.read_namespaced_secret(name, namespace, _request_timeout=10).data or {}
                return base64.b64decode(data[key]).decode() if key in data else None
            data = core_api.read_namespaced_config_map(name, namespace, _request_timeout=10).data or {}
            return data.get(key)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    return read
