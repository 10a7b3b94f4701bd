"""``ambient analyze --kubeconfig``: istioctl analyze of a cluster's objects.

Every kind the control plane reads is listed from the API server (all namespaces:
analyzers need the whole mesh, e.g. a waypoint in another namespace or mesh-wide
policies in ``istio-system``) and converted as the control plane converts it
(``kube.convert``): an object its validation refuses is an IST0106 message naming the
field (an IST0133 warning for what it only warns about), and the valid ones are
analyzed together with the folder mode's analyzers. Messages are then filtered by
namespace as istioctl does: ``-n NS``, ``-A`` for all, and by default the
kubeconfig context's namespace. Messages name objects as istioctl does for a
cluster (``Kind name.namespace``, no file).
"""

from __future__ import annotations

from typing import Any

from ambient.analysis import Message, analyze, in_namespace
from ambient.analysis.messages import SCHEMA_VALIDATION_ERROR, SCHEMA_WARNING
from ambient.config.configset import ConfigSet, Ref
from ambient.config.schema import render_path
from ambient.kube.api import KubeClient, NotFound
from ambient.kube.convert import convert, convertible, view
from ambient.kube.kinds import WATCHED

__all__ = ["analyze_cluster"]


async def analyze_cluster(client: KubeClient, namespace: str | None) -> list[Message]:
    """The messages about the cluster's mesh objects (``namespace`` None: every one)."""
    objects: dict[Ref, Any] = {}
    messages: list[Message] = []
    for info in WATCHED:
        if not convertible(info.kind):
            continue
        try:
            items, _ = await client.list(info.path(info.scope))
        except NotFound:  # the kind is not served (its CRD is not installed)
            continue
        for raw in items:
            doc = view(info, raw)
            meta = doc["metadata"]
            ref = Ref(info.kind, meta.get("namespace") or "", meta["name"])
            converted = convert(doc)
            for issue in converted.errors:
                messages.append(
                    Message(SCHEMA_VALIDATION_ERROR, _text(issue.path, issue.message), ref)
                )
            for issue in converted.warnings:
                messages.append(Message(SCHEMA_WARNING, _text(issue.path, issue.message), ref))
            if converted.obj is not None and not converted.errors:
                objects[ref] = converted.obj
    messages += analyze(ConfigSet(objects, {}, ()))
    if namespace is not None:
        messages = [m for m in messages if in_namespace(m, namespace)]
    return sorted(messages, key=lambda m: (-m.level, m.type.code, m.resource, m.text))


def _text(path: tuple[Any, ...], message: str) -> str:
    rendered = render_path(path)
    return f"{rendered}: {message}" if rendered else message
