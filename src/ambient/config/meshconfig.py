"""The mesh config (Istio's ``MeshConfig``) where Istio keeps it: the ConfigMap ``istio`` in
``istio-system``, its ``data.mesh`` a YAML document.

Istio reads the same object (istiod's ``--meshConfig`` is that ConfigMap, mounted). Here
it is loaded from the config folder like any manifest (or, in Kubernetes mode, watched
in the cluster) and delivered to waypoints with the L7 objects. What the mesh uses of
it, with Istio's spelling and defaults:

- ``extensionProviders[]``: ``name`` and, for tracing, ``opentelemetry``: ``service``
  (a Service host, ``namespace/host``, or, here only, a plain host name or IP
  address outside the mesh such as ``127.0.0.1``), ``port``, ``maxTagLength``,
  ``http`` (OTLP/HTTP protobuf: ``path``, default ``/v1/traces``; ``timeout``;
  ``headers``) or else OTLP/gRPC (``grpc``: ``timeout``, ``initialMetadata``).
  Other provider types load with a warning (not used here).
- ``defaultProviders.tracing``: the provider used when no Telemetry names one.
- ``enableTracing`` (default true) and ``defaultConfig.tracing.sampling`` (percent,
  default 1, as ``PILOT_TRACE_SAMPLING``): the sampling when a Telemetry sets none.

Decision: the rest of MeshConfig's many fields load with one warning each (ignored
here) instead of being refused, so an Istio installation's mesh config can be used
as is. Any other ConfigMap loads (metadata checked) and is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ambient.config.frozen import FrozenMap
from ambient.config.l7fields import GoDuration
from ambient.config.meta import object_meta
from ambient.config.resources import ObjectMeta
from ambient.config.schema import (
    INVALID,
    AnyValue,
    Bool,
    FieldPath,
    Int,
    Invalid,
    ListOf,
    MapOf,
    Node,
    Obj,
    Report,
    Str,
    req,
)

__all__ = [
    "CONFIG_MAP",
    "MESH_CONFIG_NAME",
    "MESH_CONFIG_NAMESPACE",
    "ConfigMap",
    "MeshConfig",
    "OpenTelemetryProvider",
    "is_mesh_config",
]

MESH_CONFIG_NAMESPACE = "istio-system"
MESH_CONFIG_NAME = "istio"
DEFAULT_SAMPLING = 1.0  # percent: istiod's PILOT_TRACE_SAMPLING default


@dataclass(frozen=True, slots=True)
class OpenTelemetryProvider:
    """An ``opentelemetry`` extension provider: where the OTLP exporter sends spans."""

    name: str
    service: str
    port: int
    http_path: str | None = None  # set: OTLP/HTTP; None: OTLP/gRPC
    timeout: float = 5.0
    headers: tuple[tuple[str, str], ...] = ()
    max_tag_length: int = 256

    @property
    def protocol(self) -> str:
        return "http" if self.http_path is not None else "grpc"


@dataclass(frozen=True)
class MeshConfig:
    """What the mesh reads of ``MeshConfig`` (see the module docstring)."""

    providers: FrozenMap[str, OpenTelemetryProvider] = field(default_factory=FrozenMap)
    default_tracing: tuple[str, ...] = ()
    enable_tracing: bool = True
    sampling: float = DEFAULT_SAMPLING

    def provider(self, name: str) -> OpenTelemetryProvider | None:
        """The tracing provider called ``name`` (case-insensitively, as istiod looks it up)."""
        for key, provider in self.providers.items():
            if key.lower() == name.lower():
                return provider
        return None


def _header(name: str, value: str = "", env_name: str = "") -> tuple[str, str]:
    import os

    return (name.lower(), value or (os.environ.get(env_name, "") if env_name else ""))


_HEADER = Obj(_header, {"name": req(Str()), "value": Str(), "envName": Str()})


def _http(
    path: str = "", timeout: float | None = None, headers: tuple[tuple[str, str], ...] = ()
) -> dict[str, Any]:
    return {"path": path or "/v1/traces", "timeout": timeout, "headers": headers}


def _grpc(
    timeout: float | None = None, initial_metadata: tuple[tuple[str, str], ...] = ()
) -> dict[str, Any]:
    return {"timeout": timeout, "headers": initial_metadata}


def _otel(
    service: str,
    port: int,
    max_tag_length: int = 0,
    http: dict[str, Any] | None = None,
    grpc: dict[str, Any] | None = None,
    **_ignored: object,
) -> dict[str, Any]:
    return {
        "service": service,
        "port": port,
        "max_tag_length": max_tag_length or 256,
        "http": http,
        "grpc": grpc,
    }


_OTEL = Obj(
    _otel,
    {
        "service": req(Str()),
        "port": req(Int(1, 65535)),
        "maxTagLength": Int(0),
        "http": Obj(
            _http,
            {"path": Str(), "timeout": GoDuration(allow_zero=False), "headers": ListOf(_HEADER)},
        ),
        "grpc": Obj(
            _grpc,
            {"timeout": GoDuration(allow_zero=False), "initialMetadata": ListOf(_HEADER)},
        ),
        "resourceDetectors": AnyValue(),
        "dynatraceSampler": AnyValue(),
    },
)


class _Provider(Node["OpenTelemetryProvider | None"]):
    """One ``extensionProviders`` entry: ``name`` plus exactly one provider type."""

    expected = "a mapping"

    def parse(
        self, value: object, at: FieldPath, report: Report
    ) -> OpenTelemetryProvider | Invalid | None:
        if not isinstance(value, Mapping):
            return self._type_error(value, at, report)
        name = value.get("name")
        if not isinstance(name, str) or not name:
            report.error((*at, "name"), "missing required field (a non-empty string)")
            return INVALID
        kinds = [k for k in value if k != "name"]
        if len(kinds) != 1:
            report.error(at, f"needs exactly one provider type besides name, got {kinds or 'none'}")
            return INVALID
        (kind,) = kinds
        if kind != "opentelemetry":
            report.warn((*at, kind), f"provider type {kind!r} is not used here: ignored")
            return None
        parsed = _OTEL.parse(value[kind], (*at, kind), report)
        if parsed is INVALID:
            return INVALID
        http, grpc = parsed["http"], parsed["grpc"]
        transport = http or grpc or {}
        return OpenTelemetryProvider(
            name=name,
            service=parsed["service"],
            port=parsed["port"],
            http_path=http["path"] if http else None,
            timeout=transport.get("timeout") or 5.0,
            headers=tuple(transport.get("headers") or ()),
            max_tag_length=parsed["max_tag_length"],
        )


def _default_providers(tracing: tuple[str, ...] = (), **_others: object) -> tuple[str, ...]:
    return tracing


class _Sampling(Node[float]):
    expected = "a number from 0 to 100"

    def parse(self, value: object, at: FieldPath, report: Report) -> float | Invalid:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
            report.error(at, f"must be a number from 0 to 100, got {value!r}")
            return INVALID
        return float(value)


class _Pick(Node[Any]):
    """A mapping of which only ``key`` is read (parsed by ``node``); the rest is ignored."""

    expected = "a mapping"

    def __init__(self, key: str, node: Node[Any]) -> None:
        self.key, self.node = key, node

    def parse(self, value: object, at: FieldPath, report: Report) -> Any:
        if not isinstance(value, Mapping):
            return self._type_error(value, at, report)
        for other in value:
            if other != self.key:
                report.warn((*at, str(other)), "not used by this mesh: ignored")
        if self.key not in value:
            return None
        return self.node.parse(value[self.key], (*at, self.key), report)


_KNOWN = {
    "extensionProviders": ListOf(_Provider()),
    "defaultProviders": Obj(
        _default_providers,
        {
            "tracing": ListOf(Str()),
            "metrics": ListOf(Str()),
            "accessLogging": ListOf(Str()),
        },
    ),
    "enableTracing": Bool(),
    "defaultConfig": _Pick("tracing", _Pick("sampling", _Sampling())),
}


def parse_mesh_config(text: object, at: FieldPath, report: Report) -> MeshConfig | Invalid:
    """``data.mesh``: the YAML text of a MeshConfig (errors and warnings into ``report``)."""
    if not isinstance(text, str):
        report.error(at, "expected a string holding the MeshConfig as YAML")
        return INVALID
    try:
        doc = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        report.error(at, f"not valid YAML: {str(exc).splitlines()[0]}")
        return INVALID
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        report.error(at, "expected a YAML mapping (a MeshConfig)")
        return INVALID
    values: dict[str, Any] = {}
    for key, value in doc.items():
        node = _KNOWN.get(str(key))
        if node is None:
            report.warn((*at, str(key)), "not used by this mesh: ignored")
            continue
        parsed = node.parse(value, (*at, str(key)), report)
        if parsed is INVALID:
            return INVALID
        values[str(key)] = parsed
    providers = {p.name: p for p in values.get("extensionProviders", ()) if p is not None}
    sampling = values.get("defaultConfig")
    return MeshConfig(
        providers=FrozenMap(providers),
        default_tracing=tuple(values.get("defaultProviders") or ()),
        enable_tracing=values.get("enableTracing", True),
        sampling=DEFAULT_SAMPLING if sampling is None else sampling,
    )


@dataclass(frozen=True)
class ConfigMap:
    """A ConfigMap; only ``istio-system/istio`` means something here (``mesh``)."""

    meta: ObjectMeta
    api_version: str = "v1"
    data: FrozenMap[str, str] = field(default_factory=FrozenMap)
    kind: str = field(default="ConfigMap", init=False)

    @property
    def mesh(self) -> MeshConfig | None:
        """The MeshConfig this ConfigMap holds (None: not the mesh config, or unusable)."""
        if not is_mesh_config(self) or "mesh" not in self.data:
            return None
        parsed = parse_mesh_config(self.data["mesh"], ("data", "mesh"), Report())
        return None if parsed is INVALID else parsed


def is_mesh_config(obj: object) -> bool:
    """Whether ``obj`` is the ConfigMap ``istio-system/istio``."""
    meta = getattr(obj, "meta", None)
    return (
        getattr(obj, "kind", None) == "ConfigMap"
        and meta is not None
        and (meta.namespace, meta.name) == (MESH_CONFIG_NAMESPACE, MESH_CONFIG_NAME)
    )


def _check(config_map: ConfigMap, at: FieldPath, report: Report) -> None:
    if is_mesh_config(config_map) and "mesh" in config_map.data:
        parse_mesh_config(config_map.data["mesh"], (*at, "data", "mesh"), report)


CONFIG_MAP: Obj[ConfigMap] = Obj(
    ConfigMap,
    {
        "apiVersion": req(Str(), attr="api_version"),
        "metadata": req(object_meta(), attr="meta"),
        "data": MapOf(Str()),
    },
    ignore=["kind", "binaryData", "immutable"],
    checks=[_check],
)
