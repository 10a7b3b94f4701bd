"""Checks that need the whole configuration, not one object.

Decisions:

- A Pod (or a Deployment's pod template) naming a ``serviceAccountName`` other
  than ``default`` needs that ServiceAccount declared in its namespace, as on
  Kubernetes (which refuses to create such pods). The SA becomes the workload's
  SPIFFE identity, so a typo would otherwise silently change who the workload
  is to authorization policies. ``default`` exists implicitly everywhere.
- WorkloadEntry ``serviceAccount`` is not checked (the workload runs elsewhere).
- Namespaces are never required to be declared: one that is used but not
  declared exists unlabelled (see ``ConfigSet.namespaces``).
- No two Pods (``status.podIP``) or Services (``spec.clusterIP``) may claim the
  same IP address, as the Kubernetes IP allocator guarantees.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ambient.config.configset import ConfigSet, Ref
from ambient.config.errors import Problem
from ambient.config.resources import (
    DEFAULT_SERVICE_ACCOUNT,
    Deployment,
    Pod,
    PodSpec,
    Resource,
    Service,
)
from ambient.config.schema import FieldPath, render_path

__all__ = ["check_references"]


def _problem(config: ConfigSet, obj: Resource, path: FieldPath, message: str) -> Problem:
    origin = config.origin(obj)
    if origin is None:
        return Problem("<unknown>", None, obj.kind, obj.meta.name, render_path(path), message)
    return Problem(
        origin.file,
        origin.document,
        obj.kind,
        obj.meta.name,
        render_path((*origin.prefix, *path)),
        message,
    )


def _pod_specs(config: ConfigSet) -> Iterable[tuple[Resource, PodSpec, FieldPath]]:
    for obj in config.objects.values():
        if isinstance(obj, Pod):
            yield obj, obj.spec, ("spec",)
        elif isinstance(obj, Deployment):
            yield obj, obj.spec.template.spec, ("spec", "template", "spec")


def _service_accounts(config: ConfigSet, declared: set[Ref]) -> list[Problem]:
    problems = []
    for obj, spec, at in _pod_specs(config):
        account = spec.service_account_name
        ref = Ref("ServiceAccount", obj.meta.namespace, account)
        if account != DEFAULT_SERVICE_ACCOUNT and ref not in declared:
            problems.append(
                _problem(
                    config,
                    obj,
                    (*at, "serviceAccountName"),
                    f"{ref} is not declared; add it, or omit serviceAccountName to run as 'default'",
                )
            )
    return problems


def _addresses(config: ConfigSet) -> list[Problem]:
    problems = []
    owners: dict[str, Resource] = {}
    for obj in config.objects.values():
        if isinstance(obj, Pod):
            address, path = obj.status.pod_ip, ("status", "podIP")
        elif isinstance(obj, Service) and not obj.spec.headless:
            address, path = obj.spec.cluster_ip, ("spec", "clusterIP")
        else:
            continue
        if address is None:
            continue
        owner = owners.setdefault(str(ipaddress.ip_address(address)), obj)
        if owner is not obj:
            problems.append(
                _problem(
                    config,
                    obj,
                    path,
                    f"address {address} is already used by {Ref.of(owner)} ({config.origin(owner)})",
                )
            )
    return problems


def check_references(config: ConfigSet, declared: Iterable[Ref] = ()) -> list[Problem]:
    """Problems between objects of ``config``; ``declared`` adds refs known to exist elsewhere."""
    known = set(config.objects) | set(declared)
    return _service_accounts(config, known) + _addresses(config)
