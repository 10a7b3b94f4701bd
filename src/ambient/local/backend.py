"""What the control API serves, whichever process model runs the mesh.

``MeshBackend`` is the interface ``ControlApi`` (the socket the ``ambient`` commands
use) serves: ``LocalMesh`` implements it in one process, ``DistributedMesh`` by asking
the control plane process and the ztunnel processes. The ``*_json`` helpers are the
configuration routes on a ``MeshConfig``, shared by ``LocalMesh`` and the control
plane process's own socket, so both answer byte for byte alike.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any, Protocol

from ambient.config import ConfigError
from ambient.config.configset import Ref
from ambient.config.frozen import FrozenMap
from ambient.config.gateway import Gateway
from ambient.controlplane.labels import NotFound
from ambient.controlplane.source import NotAuthorized
from ambient.controlplane.waypoints import gateway_status
from ambient.local.configops import MeshConfig
from ambient.local.statedir import StateDir

__all__ = [
    "MeshBackend",
    "Refused",
    "apply_json",
    "delete_json",
    "label_json",
    "manifests_json",
    "resources_json",
]


class Refused(Exception):
    """A request the mesh refuses; answered ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class MeshBackend(Protocol):
    """A running mesh, as the control API sees it."""

    @property
    def state(self) -> StateDir: ...

    async def status(self) -> dict[str, Any]: ...

    async def pods(self) -> list[dict[str, Any]]: ...

    async def system_pods(self) -> list[dict[str, Any]]:
        """The mesh's own processes as pods (``local.systempods``)."""
        ...

    async def resources(self, kind: str, namespace: str | None) -> list[Any]: ...

    async def manifests(self) -> list[dict[str, Any]]: ...

    async def node_list(self) -> list[dict[str, Any]]: ...

    async def config_dumps(self, node: str | None) -> list[dict[str, Any]]: ...

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def delete(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def label(self, body: dict[str, Any]) -> dict[str, Any]: ...


# -- configuration routes over a MeshConfig -------------------------------------------------


def resources_json(config: MeshConfig, kind: str, namespace: str | None) -> list[Any]:
    items = []
    for obj in config.plane.config:
        if kind and obj.kind.lower() != kind.lower():
            continue
        if namespace and getattr(obj.meta, "namespace", None) != namespace:
            continue
        item = to_json(obj)
        if isinstance(obj, Gateway):  # the status istiod would write: Programmed or not
            snapshot = config.plane.snapshot
            item["status"] = gateway_status(obj, snapshot.workloads, snapshot.services).to_dict()
        items.append(item)
    return items


def _with_live_labels(obj: Any, source: Any) -> dict[str, Any]:
    """The manifest an object was read from, with the labels it has now (``ambient label``
    changes objects, not their documents); a minimal one for objects without a document."""
    if isinstance(source, dict):
        manifest = json.loads(json.dumps(source, default=str))
    else:
        manifest = {
            "apiVersion": obj.api_version,
            "kind": obj.kind,
            "metadata": {"name": obj.meta.name},
        }
        if obj.meta.namespace:
            manifest["metadata"]["namespace"] = obj.meta.namespace
    metadata = manifest.setdefault("metadata", {})
    if isinstance(metadata, dict):
        metadata["labels"] = dict(obj.meta.labels)
        if not metadata["labels"]:
            del metadata["labels"]
    return dict(manifest)


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def manifests_json(config: MeshConfig) -> list[dict[str, Any]]:
    """Every object of the running configuration as its manifest and where it was read
    (``ambient analyze`` without files loads and analyzes these; ``ambient get`` shows
    them), with ``metadata.creationTimestamp`` and, for Gateways, the ``status`` istiod
    would write."""
    current = config.plane.config
    snapshot = config.plane.snapshot
    items = []
    for obj in current:
        origin = current.origin(obj)
        manifest = _with_live_labels(obj, origin.source if origin else None)
        metadata = manifest.setdefault("metadata", {})
        if isinstance(metadata, dict):
            metadata["creationTimestamp"] = _stamp(config.created(Ref.of(obj)))
        if isinstance(obj, Gateway):
            manifest["status"] = gateway_status(
                obj, snapshot.workloads, snapshot.services
            ).to_dict()
        items.append(
            {
                "file": origin.file if origin else "<live>",
                "document": origin.document if origin else 0,
                "item": origin.item if origin else None,
                "line": origin.line if origin else None,
                "manifest": manifest,
            }
        )
    return items


def apply_json(config: MeshConfig, body: dict[str, Any]) -> dict[str, Any]:
    try:
        lines, warnings = config.apply_text(
            str(body.get("text", "")), str(body.get("filename", "<stdin>"))
        )
    except (ConfigError, ValueError) as exc:
        raise Refused(str(exc)) from None
    return {"result": lines, "warnings": warnings}


def delete_json(config: MeshConfig, body: dict[str, Any]) -> dict[str, Any]:
    try:
        lines = config.delete_text(str(body.get("text", "")), str(body.get("filename", "<stdin>")))
    except (ConfigError, ValueError) as exc:
        raise Refused(str(exc)) from None
    return {"result": lines}


def label_json(config: MeshConfig, body: dict[str, Any]) -> dict[str, Any]:
    try:
        config.label_object(
            str(body["kind"]),
            str(body.get("namespace") or "default"),
            str(body["name"]),
            str(body["key"]),
            None if body.get("value") is None else str(body["value"]),
        )
    except KeyError as exc:
        raise Refused(f"missing field {exc}") from None
    except NotFound as exc:
        raise Refused(str(exc), 404) from None
    except (ValueError, LookupError, NotAuthorized, ConfigError) as exc:
        raise Refused(str(exc)) from None
    return {"result": "labeled"}


def to_json(value: Any) -> Any:
    """Frozen config objects as plain JSON (camelCase is not restored; this is for display)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, FrozenMap | dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
