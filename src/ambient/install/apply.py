"""Apply and remove the mesh's objects with server-side apply (field manager ``ambient``).

``install`` applies, in order, the CRDs (and Gateway API's safe-upgrades policy),
waits until every CRD is ``Established``, then applies the namespace,
ServiceAccounts, RBAC and the GatewayClass; server-side apply with ``force``
makes a second run a no-op and takes over fields another manager set (as
``kubectl apply --server-side --force-conflicts``). ``uninstall`` deletes the same
objects in reverse order and waits until the CRDs (with every object of their
kinds) and the namespace are gone; objects already absent are skipped. The mesh's
workloads (``--profile ambient``) go first and in the foreground (their pods deleted
before them), each waited for: a node agent that stops must still be allowed to see
its DaemonSet go — it removes the CNI plugin only then — so the RBAC that lets it
look is deleted after its pods.

The client is lightkube (async, typed models, server-side apply, watches with
resourceVersion): :func:`connect` builds it from a kubeconfig.

What they report (``progress``, one message at a time; ``cli.install`` shows them on a
terminal): ``applied KIND/NAME`` and ``deleted KIND/NAME`` for each object, ``waiting
for N ...`` when a wait starts, then ``established KIND/NAME`` or ``gone KIND/NAME`` as
each of the N is, and ``N CRDs established`` when the CRDs are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import yaml
from lightkube import ApiError, AsyncClient, KubeConfig, codecs
from lightkube.core.exceptions import ConfigError
from lightkube.generic_resource import create_global_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.types import CascadeType, PatchType

__all__ = [
    "FIELD_MANAGER",
    "InstallError",
    "connect",
    "install",
    "refuse_dev_nodes",
    "render",
    "uninstall",
]

FIELD_MANAGER = "ambient"
WORKLOAD_KINDS = ("DaemonSet", "Deployment")
Progress = Callable[[str], None]
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# Our kinds not in lightkube's models: registered so that codecs.from_dict knows them.
create_global_resource("gateway.networking.k8s.io", "v1", "GatewayClass", "gatewayclasses")
# Nodes read as plain dicts: lightkube's model refuses a node whose nodeInfo lacks a field.
_NODES = create_global_resource("", "v1", "NodeForInstall", "nodes")


class InstallError(RuntimeError):
    """The cluster refused or could not be reached; the message names the object."""


def connect(kubeconfig: Path | None, context: str | None) -> AsyncClient:
    """A client for ``kubeconfig`` (else ``$KUBECONFIG``, ``~/.kube/config`` or in-cluster)."""
    try:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        single = config.get(context_name=context)
    except (ConfigError, OSError, KeyError, ValueError, yaml.YAMLError) as err:
        where = kubeconfig or "the default kubeconfig"
        detail = f"no context {err}" if isinstance(err, KeyError) else str(err)
        raise InstallError(f"cannot load {where}: {detail}") from None
    if single is None:
        raise InstallError(f"{kubeconfig or 'the kubeconfig'} has no current context")
    return AsyncClient(config=single, field_manager=FIELD_MANAGER)


def render(objects: list[dict[str, Any]]) -> str:
    """The objects as one multi-document YAML stream (what ``--dry-run`` prints)."""
    return yaml.dump_all(objects, Dumper=_DUMPER, sort_keys=False)


def _label(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')}/{ns}{meta.get('name')}"


def _refused(obj: dict[str, Any], err: ApiError, doing: str) -> InstallError:
    return InstallError(f"{doing} {_label(obj)}: {err.status.code} {err.status.message}")


def _unreachable(err: httpx2.HTTPError) -> InstallError:
    if isinstance(err, ApiError):
        return InstallError(f"the API server refused: {err.status.code} {err.status.message}")
    if isinstance(err, httpx2.HTTPStatusError):
        return InstallError(
            f"the API server answered {err.response.status_code} to {err.request.url}"
        )
    return InstallError(f"cannot reach the API server: {err}")


async def install(
    client: AsyncClient,
    crds: list[dict[str, Any]],
    mesh: list[dict[str, Any]],
    progress: Progress,
    timeout: float = 60.0,
) -> None:
    """Apply ``crds``, wait until they are Established, then apply ``mesh``."""
    try:
        await _apply_all(client, crds, progress)
        names = [c["metadata"]["name"] for c in crds if c["kind"] == "CustomResourceDefinition"]
        progress(f"waiting for {len(names)} CRDs to be established")
        await _established(client, names, timeout, progress)
        progress(f"{len(names)} CRDs established")
        await _apply_all(client, mesh, progress)
    except httpx2.HTTPError as err:
        raise _unreachable(err) from None


DEV_RUNTIME_PREFIX = "ambient://"
"""The ``containerRuntimeVersion`` of ``ambient up --kubeconfig``'s nodes (``ambient.kubelet``)."""


def _runtime(status: Any) -> str:
    info = status.get("nodeInfo") if isinstance(status, dict) else None
    return str(info.get("containerRuntimeVersion", "")) if isinstance(info, dict) else ""


async def refuse_dev_nodes(client: AsyncClient) -> None:
    """``InstallError`` if nodes of ``ambient up --kubeconfig`` are registered: their kubelet
    runs the mesh's processes itself and pods' commands without images or volumes, so the
    ambient profile's DaemonSets would put a second ztunnel and node agent on each, started
    without the files their manifests mount."""
    try:
        dev = [
            str(node.metadata.name if node.metadata else "?")
            async for node in client.list(_NODES)
            if _runtime(node.status).startswith(DEV_RUNTIME_PREFIX)
        ]
    except ApiError as err:
        raise InstallError(f"listing the nodes: {err.status.code} {err.status.message}") from None
    except httpx2.HTTPError as err:
        raise _unreachable(err) from None
    if dev:
        raise InstallError(
            f"--profile ambient is for nodes with a container runtime; {', '.join(sorted(dev))} "
            "run ambient up --kubeconfig, which runs the mesh itself: install without --profile"
        )


async def _apply_all(
    client: AsyncClient, objects: list[dict[str, Any]], progress: Progress
) -> None:
    for obj in objects:
        try:
            await client.apply(codecs.from_dict(obj), force=True)
        except ApiError as err:
            raise _refused(obj, err, "applying") from None
        progress(f"applied {_label(obj)}")


async def _established(
    client: AsyncClient, names: list[str], timeout: float, progress: Progress
) -> None:
    deadline = time.monotonic() + timeout
    for name in names:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            await asyncio.wait_for(
                client.wait(CustomResourceDefinition, name, for_conditions=["Established"]),
                remaining,
            )
        except TimeoutError:
            raise InstallError(
                f"CustomResourceDefinition/{name} not Established after {timeout:.0f} s"
            ) from None
        progress(f"established CustomResourceDefinition/{name}")


async def uninstall(
    client: AsyncClient,
    crds: list[dict[str, Any]],
    mesh: list[dict[str, Any]],
    progress: Progress,
    timeout: float = 120.0,
) -> None:
    """Delete ``mesh`` then ``crds`` (reverse order); wait until the CRDs and namespaces are
    gone, and each workload before going on (see the module docstring)."""
    try:
        for obj in [*reversed(mesh), *reversed(crds)]:
            if obj["kind"] in WORKLOAD_KINDS:
                if await _delete(client, obj, progress, CascadeType.FOREGROUND):
                    await _gone(client, [obj], timeout, progress)
            else:
                await _delete(client, obj, progress)
        gone = [o for o in crds + mesh if o["kind"] in ("CustomResourceDefinition", "Namespace")]
        await _gone(client, gone, timeout, progress)
    except httpx2.HTTPError as err:
        raise _unreachable(err) from None


async def _delete(
    client: AsyncClient,
    obj: dict[str, Any],
    progress: Progress,
    cascade: CascadeType | None = None,
) -> bool:
    """Delete ``obj``; False if it was absent."""
    kind: Any = type(codecs.from_dict(obj))
    meta = obj["metadata"]
    try:
        await client.delete(kind, meta["name"], namespace=meta.get("namespace"), cascade=cascade)
    except httpx2.HTTPStatusError as err:
        if err.response.status_code == 404:  # gone already, or its CRD is (no Status body then)
            return False
        if isinstance(err, ApiError):
            raise _refused(obj, err, "deleting") from None
        raise
    progress(f"deleted {_label(obj)}")
    return True


async def _gone(
    client: AsyncClient, objects: list[dict[str, Any]], timeout: float, progress: Progress
) -> None:
    """Poll until each object is absent (CRD and namespace deletion, and a foreground
    deletion's dependents, finish asynchronously)."""
    deadline = time.monotonic() + timeout
    progress(f"waiting for {len(objects)} object(s) to be deleted")
    for obj in objects:
        kind: Any = type(codecs.from_dict(obj))
        meta = obj["metadata"]
        nudged = 0.0
        while True:
            try:
                found = await client.get(kind, meta["name"], namespace=meta.get("namespace"))
                if _instance_deletion_failed(found) and time.monotonic() - nudged > 2:
                    nudged = time.monotonic()
                    await _nudge(client, meta["name"])
            except ApiError as err:
                if err.status.code == 404:
                    progress(f"gone {_label(obj)}")
                    break
                raise _refused(obj, err, "waiting for the deletion of") from None
            if time.monotonic() > deadline:
                raise InstallError(f"{_label(obj)} still present after {timeout:.0f} s")
            await asyncio.sleep(0.2)


def _instance_deletion_failed(found: Any) -> bool:
    """A CRD whose finalizer failed to delete its objects (the API server answers "storage
    is (re)initializing" for a CRD deleted moments after it was created, and the finalizer
    then retries with a back-off that grows to minutes)."""
    if not isinstance(found, CustomResourceDefinition) or found.status is None:
        return False
    return any(
        c.type == "Terminating" and c.reason == "InstanceDeletionFailed"
        for c in found.status.conditions or []
    )


async def _nudge(client: AsyncClient, name: str) -> None:
    """Have the CRD finalizer try again now: it requeues a deleted CRD at once on any change
    other than its own Terminating condition (a metadata annotation is one)."""
    note = {"metadata": {"annotations": {"ambient.io/deletion-retry": str(time.time())}}}
    try:
        await client.patch(CustomResourceDefinition, name, note, patch_type=PatchType.MERGE)
    except ApiError as err:
        if err.status.code != 404:  # gone meanwhile: what we wait for
            raise
