"""The control plane (istiod's job): config store, ambient index, xDS server and CA service.

Modules: ``allocate`` (persisted loopback addresses for pods, Services, nodes),
``expand`` (the pods of Deployments), ``services`` (services and which
workloads serve them), ``index`` (``build_snapshot``: ConfigSet -> workloads
and services), ``snapshot`` (``MeshSnapshot`` lookups, ``Delta``, ``diff``),
``labels`` (relabelling a ConfigSet), ``source`` (the interface proxies use),
``plane`` (``ControlPlane``: updates, subscriptions, labels, node-bound CA).
"""

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
