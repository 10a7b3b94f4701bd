"""``targetRefs``: the object a policy attaches to (Gateway, GatewayClass, Service, ServiceEntry).

The typed form of RequestAuthentication's refs and the reader of an already
validated AuthorizationPolicy spec's; which refs attach to a waypoint is the
waypoint's business (``waypoint.policy.targets``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ambient.authz._spec import get_list, get_mapping, get_str, mapping

__all__ = ["TargetRef", "parse_target_refs"]


@dataclass(frozen=True, slots=True)
class TargetRef:
    """One ``targetRefs`` entry; ``group`` canonical (``""`` for the core group)."""

    kind: str
    name: str
    group: str = ""
    namespace: str = ""


def parse_target_refs(spec: Mapping[str, object]) -> tuple[TargetRef, ...]:
    """``targetRefs`` (or the legacy ``targetRef``) of an already validated spec."""
    refs = list(get_list(spec, "targetRefs", "spec") or [])
    single = get_mapping(spec, "targetRef", "spec")
    if not refs and single is not None:
        refs = [single]
    out = []
    for i, raw in enumerate(refs):
        ref = mapping(raw, f"spec.targetRefs[{i}]")
        group = get_str(ref, "group", "ref") or ""
        out.append(
            TargetRef(
                kind=get_str(ref, "kind", "ref") or "",
                name=get_str(ref, "name", "ref") or "",
                group="" if group == "core" else group,
                namespace=get_str(ref, "namespace", "ref") or "",
            )
        )
    return tuple(out)
