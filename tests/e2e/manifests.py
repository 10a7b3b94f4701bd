"""The Kubernetes objects the test meshes are made of, built by name: one call an object.

Each builder returns the object as a dict, spelled as Kubernetes spells it;
:func:`manifest` writes them (and any literal YAML documents a test keeps for the
objects only it uses: policies, routes) as one multi-document YAML text, which is
what ``ambient up``'s config folder, ``ambient apply`` and ``kubectl apply`` read.
Only what the caller names goes into an object; anything else is Kubernetes' default.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

Object = dict[str, Any]

PRIVILEGED = {"privileged": True}
"""The ``securityContext`` of a container that runs the test runner's Python (``sys.executable``)
or reads its files: they live under /root (0700), which a pod's default user (65534) cannot
enter; a privileged container runs as the mesh's user."""

SLEEP = "import signal; signal.pause()"
"""A Python program that waits forever (a pod that only sends)."""


def manifest(*objects: Mapping[str, Any] | str) -> str:
    """The objects as one YAML text, in order; a ``str`` is YAML documents kept as written."""
    docs = []
    for obj in objects:
        text = obj if isinstance(obj, str) else yaml.safe_dump(dict(obj), sort_keys=False)
        docs.append(text.strip("\n") + "\n")
    return "---\n".join(docs)


def python(*args: str | Path) -> list[str]:
    """A command that runs ``args`` with the test runner's Python (pair with ``privileged``)."""
    return [sys.executable, *map(str, args)]


def namespace(name: str, *, ambient: bool = True, waypoint: str | None = None) -> Object:
    """A Namespace, enrolled in the mesh (``istio.io/dataplane-mode: ambient``) unless told
    not; ``waypoint`` names the waypoint its services use (``istio.io/use-waypoint``)."""
    labels = {}
    if ambient:
        labels["istio.io/dataplane-mode"] = "ambient"
    if waypoint is not None:
        labels["istio.io/use-waypoint"] = waypoint
    return _object("v1", "Namespace", name, None, labels=labels)


def service_account(ns: str, name: str) -> Object:
    return _object("v1", "ServiceAccount", name, ns)


def waypoint(
    ns: str, name: str = "waypoint", *, for_: str = "service", nodes: str | None = None
) -> Object:
    """A waypoint: a Gateway of class ``istio-waypoint`` with its HBONE listener on 15008,
    for ``service``/``workload``/``all`` traffic (``istio.io/waypoint-for``); ``nodes`` pins
    it (``ambient.io/nodes``, ours)."""
    gateway = _object(
        "gateway.networking.k8s.io/v1",
        "Gateway",
        name,
        ns,
        labels={"istio.io/waypoint-for": for_},
        annotations={"ambient.io/nodes": nodes} if nodes else None,
    )
    gateway["spec"] = {
        "gatewayClassName": "istio-waypoint",
        "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
    }
    return gateway


def service(
    ns: str,
    name: str,
    ports: Sequence[Mapping[str, Any]],
    *,
    selector: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Object:
    """A Service selecting ``selector`` (default ``app: NAME``); ``ports`` as Kubernetes
    spells them (``{"name": "http", "port": 8080}``)."""
    svc = _object("v1", "Service", name, ns, labels=labels)
    svc["spec"] = {
        "selector": dict(selector if selector is not None else {"app": name}),
        "ports": [dict(p) for p in ports],
    }
    return svc


def pod(
    ns: str,
    name: str,
    command: Sequence[str | Path],
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    node: str | None = None,
    service_account: str | None = None,
    ports: Sequence[int | Mapping[str, Any]] = (),
    privileged: bool = False,
    container: str | None = None,
    **fields: Any,
) -> Object:
    """A Pod with one container (named ``container``, default ``name``) running ``command``.

    ``labels`` default to ``app: NAME`` (``{}`` for none); ``node`` is ``nodeName``;
    ``ports`` are container ports (an int is ``containerPort``); ``privileged`` sets
    :data:`PRIVILEGED`; ``fields`` are more container fields as Kubernetes spells them
    (``image=``, ``env=``, ``workingDir=``, ``readinessProbe=``).
    """
    labels = dict(labels) if labels is not None else {"app": name}
    obj = _object("v1", "Pod", name, ns, labels=labels, annotations=annotations)
    spec: Object = {}
    if service_account is not None:
        spec["serviceAccountName"] = service_account
    if node is not None:
        spec["nodeName"] = node
    main: Object = {"name": container or name, "command": [str(c) for c in command]}
    if ports:
        main["ports"] = [{"containerPort": p} if isinstance(p, int) else dict(p) for p in ports]
    if privileged:
        main["securityContext"] = dict(PRIVILEGED)
    main.update(fields)
    spec["containers"] = [main]
    obj["spec"] = spec
    return obj


def deployment(
    ns: str,
    name: str,
    command: Sequence[str | Path],
    *,
    replicas: int = 1,
    selector: Mapping[str, str] | None = None,
    **pod_args: Any,
) -> Object:
    """A Deployment of ``replicas`` pods as :func:`pod` builds them from ``command`` and
    ``pod_args`` (their labels and annotations are the template's); ``selector`` defaults
    to the pods' labels."""
    template = pod(ns, name, command, **pod_args)
    meta = template["metadata"]
    del meta["name"], meta["namespace"]
    meta.setdefault("labels", {})
    obj = _object("apps/v1", "Deployment", name, ns)
    obj["spec"] = {
        "replicas": replicas,
        "selector": {"matchLabels": dict(selector if selector is not None else meta["labels"])},
        "template": {"metadata": meta, "spec": template["spec"]},
    }
    return obj


def _object(
    api_version: str,
    kind: str,
    name: str,
    ns: str | None,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Object:
    meta: Object = {"name": name}
    if ns is not None:
        meta["namespace"] = ns
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}
