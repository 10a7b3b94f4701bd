"""``metadata`` and the shape every document shares; ``resource_schema`` builds a kind's node.

Decisions:

- Standard server-side ``metadata`` fields users paste from ``kubectl get -o
  yaml`` (``uid``, ``resourceVersion``, ``creationTimestamp``, ``generation``,
  ``managedFields``, ``ownerReferences``, ``finalizers``, ``generateName``...)
  are accepted and ignored.
- A namespaced kind's namespace defaults to ``default``; cluster-scoped kinds
  (Namespace) reject ``metadata.namespace``.
- ``status`` is accepted and ignored unless the kind declares a status node
  (only Pod does).
- ``istio.io/dataplane-mode`` values other than ``ambient``/``none`` load with a
  warning: like Istio, such workloads are not enrolled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from ambient.config import rules
from ambient.config.frozen import FrozenMap
from ambient.config.resources import (
    LABEL_DATAPLANE_MODE,
    ObjectMeta,
)
from ambient.config.schema import (
    Field,
    FieldPath,
    Int,
    MapKey,
    MapOf,
    Node,
    Obj,
    Report,
    Str,
    req,
)

__all__ = [
    "ANNOTATIONS",
    "LABELS",
    "PORT",
    "PORT_NAME",
    "SERVER_METADATA",
    "check_istio_labels",
    "object_meta",
    "resource_schema",
]

R = TypeVar("R")

PORT = Int(1, 65535)
PORT_NAME = Str(rules.iana_svc_name)
LABELS = MapOf(Str(rules.label_value), rules.label_key)
ANNOTATIONS = MapOf(Str(), rules.label_key)

SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "generateName",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "selfLink",
)


def check_istio_labels(labels: Mapping[str, str], at: FieldPath, report: Report) -> None:
    """Warn about Istio label values that Istio would silently treat as unset."""
    mode = labels.get(LABEL_DATAPLANE_MODE)
    if mode is not None and mode not in ("ambient", "none"):
        report.warn(
            (*at, "labels", MapKey(LABEL_DATAPLANE_MODE)),
            f"unknown value {mode!r} (expected 'ambient' or 'none'): not enrolled in the mesh",
        )


def _check_meta(meta: ObjectMeta, at: FieldPath, report: Report) -> None:
    check_istio_labels(meta.labels, at, report)


def _cluster_meta(
    name: str,
    labels: FrozenMap[str, str] | None = None,
    annotations: FrozenMap[str, str] | None = None,
) -> ObjectMeta:
    return ObjectMeta(name, "", labels or FrozenMap(), annotations or FrozenMap())


def object_meta(
    *, namespaced: bool = True, name_rule: rules.Rule = rules.dns1123_subdomain
) -> Obj[ObjectMeta]:
    """The ``metadata`` node; a namespaced kind's namespace defaults to ``default``."""
    fields: dict[str, Field[Any] | Node[Any]] = {
        "name": req(Str(name_rule)),
        "labels": LABELS,
        "annotations": ANNOTATIONS,
    }
    if namespaced:
        fields["namespace"] = Str(rules.dns1123_label)
        return Obj(ObjectMeta, fields, ignore=SERVER_METADATA, checks=[_check_meta])
    unsupported = {"namespace": "this kind is cluster-scoped; remove metadata.namespace"}
    return Obj(
        _cluster_meta, fields, ignore=SERVER_METADATA, unsupported=unsupported, checks=[_check_meta]
    )


def resource_schema(
    cls: type[R],
    spec: Node[Any] | None,
    *,
    namespaced: bool = True,
    name_rule: rules.Rule = rules.dns1123_subdomain,
    spec_required: bool = False,
    status: Node[Any] | None = None,
    ignore: Iterable[str] = (),
) -> Obj[R]:
    """The node for a whole document of kind ``cls``.

    ``cls`` is a frozen dataclass with ``meta``, ``api_version``, optionally
    ``spec`` (and ``status``), and ``kind`` (an ``init=False`` field with the
    kind as default, or an init field for kinds sharing one class). Without a
    ``status`` node, ``status`` is accepted and ignored.
    """
    fields: dict[str, Field[Any] | Node[Any]] = {
        "apiVersion": req(Str(), attr="api_version"),
        "metadata": req(object_meta(namespaced=namespaced, name_rule=name_rule), attr="meta"),
    }
    init = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    ignored = {*ignore}
    if "kind" in init:
        fields["kind"] = req(Str())
    else:
        ignored.add("kind")
    if spec is not None:
        fields["spec"] = Field(spec, required=spec_required)
    if status is not None:
        fields["status"] = status
    else:
        ignored.add("status")
    return Obj(cls, fields, ignore=ignored)
