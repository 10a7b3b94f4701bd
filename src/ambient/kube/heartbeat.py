"""The control plane's heartbeat in the cluster: Lease ``istio-system/ambient-controlplane``.

How ``ambient status --kubeconfig`` finds out, through the API server alone, whether the
control plane runs and what it watches: every ``interval`` (10 s) and whenever its
readiness changes, the controller applies the Lease with ``holderIdentity`` (host and
pid), ``renewTime`` and, in the annotation ``ambient.io/status``, its status as JSON
(``KubeController.status()`` plus its xDS and CA addresses). A Lease whose
``renewTime`` is older than ``leaseDurationSeconds`` (30 s) means the control plane is
gone. The Lease is a heartbeat, not a lock: there is no leader election (one replica).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ambient.install.manifests import NAMESPACE
from ambient.kube.api import KubeClient, KubeError
from ambient.kube.kinds import LEASE

__all__ = ["LEASE_NAME", "STATUS_ANNOTATION", "heartbeat", "lease_body", "read_status"]

log = logging.getLogger("ambient.kube")

LEASE_NAME = "ambient-controlplane"
STATUS_ANNOTATION = "ambient.io/status"
LEASE_SECONDS = 30


def _micro(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(
    status: dict[str, Any], identity: str, acquired: float, now: float
) -> dict[str, Any]:
    """The Lease the controller applies (see the module docstring)."""
    return {
        "apiVersion": LEASE.api_version,
        "kind": "Lease",
        "metadata": {
            "name": LEASE_NAME,
            "namespace": NAMESPACE,
            "annotations": {STATUS_ANNOTATION: json.dumps(status, separators=(",", ":"))},
        },
        "spec": {
            "holderIdentity": identity,
            "leaseDurationSeconds": LEASE_SECONDS,
            "acquireTime": _micro(acquired),
            "renewTime": _micro(now),
        },
    }


async def heartbeat(
    client: KubeClient,
    status: Callable[[], dict[str, Any]],
    *,
    interval: float = 10.0,
    changed: asyncio.Event | None = None,
) -> None:
    """Apply the Lease every ``interval`` seconds, or sooner when ``changed`` is set."""
    identity = f"{socket.gethostname()}/{os.getpid()}"
    acquired = time.time()
    path = LEASE.path(NAMESPACE, LEASE_NAME)
    failing = False
    while True:
        try:
            await client.apply(path, lease_body(status(), identity, acquired, time.time()))
            if failing:
                log.info("heartbeat Lease %s/%s written again", NAMESPACE, LEASE_NAME)
            failing = False
        except KubeError as err:
            if not failing:
                log.warning(
                    "cannot write the heartbeat Lease %s/%s: %s", NAMESPACE, LEASE_NAME, err
                )
            failing = True
        if changed is None:
            await asyncio.sleep(interval)
            continue
        try:
            async with asyncio.timeout(interval):
                await changed.wait()
        except TimeoutError:
            pass
        changed.clear()


def _parse_time(text: str) -> float | None:
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


async def read_status(client: KubeClient) -> dict[str, Any] | None:
    """The control plane's last heartbeat (None: it never ran), with ``alive`` (its Lease
    is fresh), ``holder`` and ``renewed`` (seconds ago) added."""
    try:
        lease = await client.get(LEASE.path(NAMESPACE, LEASE_NAME))
    except KubeError as err:
        if err.code == 404:
            return None
        raise
    spec = lease.get("spec") or {}
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    try:
        status = json.loads(annotations.get(STATUS_ANNOTATION, "{}"))
    except ValueError:
        status = {}
    renewed = _parse_time(str(spec.get("renewTime", "")))
    age = None if renewed is None else max(0.0, time.time() - renewed)
    duration = spec.get("leaseDurationSeconds") or LEASE_SECONDS
    status["holder"] = spec.get("holderIdentity", "")
    status["renewed"] = age
    status["alive"] = age is not None and age <= duration
    return dict(status)
