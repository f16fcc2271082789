"""The image catalog: how the images a scenario uses really behave (``images.yaml``, extensible).

``Catalog.load()`` reads the packaged ``images.yaml``; ``extend`` adds a
scenario's own ``images.yaml``. ``resolve`` turns an image reference into the
catalog entry and the pull error the real registry would give when the image or
tag does not exist. Used by the kubelet stand-in.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import pathlib
from typing import Any

import yaml

from aegis import quantity


@dataclasses.dataclass(frozen=True)
class Listener:
    port: int
    http: tuple[str, ...] | None  # None: TCP only

    def serves(self, path: str) -> bool:
        return self.http is not None and ("*" in self.http or path.split("?")[0] in self.http)


@dataclasses.dataclass(frozen=True)
class EnvRequirement:
    any_of: tuple[str, ...]
    exit_code: int
    logs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Image:
    repository: str
    tags: tuple[str, ...]
    listens: tuple[Listener, ...] = ()
    memory: int = 1 << 20
    memory_from_args: str | None = None
    memory_growth: int = 0  # bytes per second the program leaks (0: none)
    startup: float = 0.5
    shell: bool = False
    requires_env: tuple[EnvRequirement, ...] = ()
    logs: tuple[str, ...] = ()
    size: int = 10_000_000

    def listener(self, port: int) -> Listener | None:
        return next((listener for listener in self.listens if listener.port == port), None)


@dataclasses.dataclass(frozen=True)
class Reference:
    """A parsed image reference."""

    registry: str
    repository: str  # without registry, e.g. library/nginx
    tag: str
    original: str

    @property
    def canonical(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def full(self) -> str:
        separator = "@" if self.tag.startswith("sha256:") else ":"
        return f"{self.canonical}{separator}{self.tag}"


def parse_reference(image: str) -> Reference:
    """``nginx:1.27`` -> docker.io/library/nginx, tag 1.27 (as containerd normalises it)."""
    name, tag = image, "latest"
    if "@" in name:
        name, tag = name.split("@", 1)
    else:
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name, tag = name.rsplit(":", 1)
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, repository = parts[0], "/".join(parts[1:])
    else:
        registry, repository = "docker.io", name
    if registry == "docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    return Reference(registry=registry, repository=repository, tag=tag, original=image)


def _image(repository: str, raw: dict[str, Any]) -> Image:
    return Image(
        repository=repository,
        tags=tuple(str(tag) for tag in raw.get("tags") or []),
        listens=tuple(
            Listener(port=int(item["port"]), http=tuple(item["http"]) if item.get("http") is not None else None)
            for item in raw.get("listens") or []
        ),
        memory=int(quantity.parse(raw.get("memory", "1Mi"))),
        memory_from_args=raw.get("memory_from_args"),
        memory_growth=int(quantity.parse(raw.get("memory_growth", "0"))),
        startup=float(raw.get("startup", 0.5)),
        shell=bool(raw.get("shell", False)),
        requires_env=tuple(
            EnvRequirement(
                any_of=tuple(req["any_of"]), exit_code=int(req.get("exit_code", 1)), logs=tuple(req.get("logs") or [])
            )
            for req in raw.get("requires_env") or []
        ),
        logs=tuple(str(line) for line in raw.get("logs") or []),
        size=int(raw.get("size", 10_000_000)),
    )


class Catalog:
    """Known images by canonical repository."""

    def __init__(self, images: dict[str, Image] | None = None) -> None:
        self.images: dict[str, Image] = dict(images or {})

    @classmethod
    def load(cls) -> Catalog:
        text = importlib.resources.files("aegis.sim").joinpath("images.yaml").read_text()
        catalog = cls()
        catalog.extend_from(yaml.safe_load(text))
        return catalog

    def extend_from(self, document: dict[str, Any]) -> None:
        for repository, raw in (document.get("images") or {}).items():
            canonical = parse_reference(f"{repository}:x").canonical
            self.images[canonical] = _image(canonical, raw or {})

    def extend(self, path: pathlib.Path) -> None:
        """Add (or override) images from a scenario's ``images.yaml``."""
        self.extend_from(yaml.safe_load(path.read_text()) or {})

    def resolve(self, image: str) -> tuple[Reference, Image | None, str | None]:
        """(reference, catalog entry, pull error). The entry is None when the pull fails."""
        ref = parse_reference(image)
        entry = self.images.get(ref.canonical)
        if entry is None:
            if ref.registry == "docker.io":
                error = (
                    f'failed to pull and unpack image "{ref.full}": failed to resolve reference "{ref.full}": '
                    "pull access denied, repository does not exist or may require authorization: server message: "
                    "insufficient_scope: authorization failed"
                )
            else:
                error = (
                    f'failed to pull and unpack image "{ref.full}": failed to resolve reference "{ref.full}": '
                    f'failed to do request: Head "https://{ref.registry}/v2/{ref.repository}/manifests/{ref.tag}": '
                    f"dial tcp: lookup {ref.registry}: no such host"
                )
            return ref, None, f"rpc error: code = Unknown desc = {error}"
        if ref.tag not in entry.tags and not ref.tag.startswith("sha256:"):
            error = (
                f'failed to pull and unpack image "{ref.full}": failed to resolve reference "{ref.full}": '
                f"{ref.full}: not found"
            )
            return ref, None, f"rpc error: code = NotFound desc = {error}"
        return ref, entry, None
