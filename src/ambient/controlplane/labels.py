"""Changing one label of one object of a ``ConfigSet`` (what ``ambient label`` does).

Objects are frozen: the result is a new ``ConfigSet`` sharing everything else.
A namespace that is only implicit (used, never declared) becomes a declared
Namespace carrying the label. Kinds are given as Kubernetes spells them
(``Pod``) or as kubectl's resource names and short names (``pod``, ``po``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from ambient.config import rules
from ambient.config.configset import ConfigSet, Ref
from ambient.config.frozen import FrozenMap
from ambient.config.resources import Namespace, ObjectMeta, Resource

__all__ = ["NotFound", "check_label", "kind_of", "with_label"]

_ALIASES = {
    "namespace": "Namespace",
    "namespaces": "Namespace",
    "ns": "Namespace",
    "pod": "Pod",
    "pods": "Pod",
    "po": "Pod",
    "deployment": "Deployment",
    "deployments": "Deployment",
    "deploy": "Deployment",
    "service": "Service",
    "services": "Service",
    "svc": "Service",
    "serviceaccount": "ServiceAccount",
    "serviceaccounts": "ServiceAccount",
    "sa": "ServiceAccount",
    "workloadentry": "WorkloadEntry",
    "workloadentries": "WorkloadEntry",
    "we": "WorkloadEntry",
    "serviceentry": "ServiceEntry",
    "serviceentries": "ServiceEntry",
    "se": "ServiceEntry",
}


class NotFound(LookupError):
    """The object to change does not exist."""


def kind_of(kind: str) -> str:
    """The Kubernetes kind for ``kind`` (``po`` -> ``Pod``); unknown spellings pass through."""
    return _ALIASES.get(kind.lower(), kind)


def check_label(key: str, value: str | None) -> None:
    """Raise ValueError unless ``key`` (and ``value``, if any) are valid label syntax."""
    problem = rules.label_key(key) or (None if value is None else rules.label_value(value))
    if problem:
        raise ValueError(problem)


def _relabel(obj: Resource, key: str, value: str | None) -> Resource:
    labels = dict(obj.meta.labels)
    if value is None:
        labels.pop(key, None)
    else:
        labels[key] = value
    meta = dataclasses.replace(obj.meta, labels=FrozenMap(labels))
    return cast(Resource, dataclasses.replace(cast(Any, obj), meta=meta))


def with_label(
    config: ConfigSet, kind: str, namespace: str, name: str, key: str, value: str | None
) -> ConfigSet:
    """``config`` with label ``key`` of the object set to ``value`` (None removes it).

    For a Namespace, ``namespace`` is ignored. Raises ``NotFound`` or ValueError.
    """
    check_label(key, value)
    kind = kind_of(kind)
    obj: Resource | None
    if kind == "Namespace":
        ref = Ref(kind, "", name)
        obj = config.objects.get(ref)
        if obj is None and config.namespace(name) is not None:
            obj = Namespace(ObjectMeta(name, ""))
    else:
        ref = Ref(kind, namespace, name)
        obj = config.objects.get(ref)
    if obj is None:
        raise NotFound(f"{ref} not found")
    new = _relabel(obj, key, value)
    if new == obj and ref in config.objects:
        return config
    return dataclasses.replace(config, objects={**config.objects, ref: new})
