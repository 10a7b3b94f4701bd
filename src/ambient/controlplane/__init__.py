"""The control plane (istiod's job): config store, ambient index, xDS server and CA service.

Modules: ``allocate`` (persisted loopback addresses for pods, Services, nodes),
``expand`` (the pods of Deployments), ``services`` (services and which
workloads serve them), ``index`` (``build_snapshot``: ConfigSet -> workloads
and services), ``snapshot`` (``MeshSnapshot`` lookups, ``Delta``, ``diff``),
``labels`` (relabelling a ConfigSet), ``source`` (the interface proxies use),
``plane`` (``ControlPlane``: updates, subscriptions, labels, node-bound CA).
"""

from typing import TYPE_CHECKING

from ambient.lazyexports import lazy_exports

if TYPE_CHECKING:
    from ambient.controlplane.allocate import (
        AddressAllocator,
        AddressConflict,
        AllocationError,
        AllocationKey,
    )
    from ambient.controlplane.expand import (
        ANNOTATION_NODES,
        ScheduledPod,
        expand_deployment,
        scheduled_pods,
        template_hash,
    )
    from ambient.controlplane.index import build_snapshot
    from ambient.controlplane.labels import NotFound, with_label
    from ambient.controlplane.plane import ControlPlane, Subscription
    from ambient.controlplane.snapshot import EMPTY, Delta, MeshSnapshot, diff
    from ambient.controlplane.source import MeshSource, NotAuthorized, SubscriptionLike

# Imported on first use (PEP 562), as ``ambient.config``: a node proxy needs a few of
# the package's modules, not all of them (``tests/unit/local/test_nodeproxy_imports.py``).
_LAZY = {
    "ANNOTATION_NODES": "ambient.controlplane.expand",
    "AddressAllocator": "ambient.controlplane.allocate",
    "AddressConflict": "ambient.controlplane.allocate",
    "AllocationError": "ambient.controlplane.allocate",
    "AllocationKey": "ambient.controlplane.allocate",
    "ControlPlane": "ambient.controlplane.plane",
    "Delta": "ambient.controlplane.snapshot",
    "EMPTY": "ambient.controlplane.snapshot",
    "MeshSnapshot": "ambient.controlplane.snapshot",
    "MeshSource": "ambient.controlplane.source",
    "NotAuthorized": "ambient.controlplane.source",
    "NotFound": "ambient.controlplane.labels",
    "ScheduledPod": "ambient.controlplane.expand",
    "Subscription": "ambient.controlplane.plane",
    "SubscriptionLike": "ambient.controlplane.source",
    "build_snapshot": "ambient.controlplane.index",
    "diff": "ambient.controlplane.snapshot",
    "expand_deployment": "ambient.controlplane.expand",
    "scheduled_pods": "ambient.controlplane.expand",
    "template_hash": "ambient.controlplane.expand",
    "with_label": "ambient.controlplane.labels",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "ANNOTATION_NODES",
    "EMPTY",
    "AddressAllocator",
    "AddressConflict",
    "AllocationError",
    "AllocationKey",
    "ControlPlane",
    "Delta",
    "MeshSnapshot",
    "MeshSource",
    "NotAuthorized",
    "NotFound",
    "ScheduledPod",
    "Subscription",
    "SubscriptionLike",
    "build_snapshot",
    "diff",
    "expand_deployment",
    "scheduled_pods",
    "template_hash",
    "with_label",
]
