"""The ambient index: a ``ConfigSet`` becomes workloads and services (istiod's job for ztunnel).

``build_snapshot`` is pure apart from the address allocator. Decisions:

- Workloads: every pod (declared, or expanded from a Deployment, see
  ``expand``), every WorkloadEntry (``local=False``), and every inline
  ServiceEntry endpoint (``local=False``, type ``workloadentry``). uids are
  Istio's: ``<cluster>//Pod/<ns>/<name>``, ``<cluster>//WorkloadEntry/<ns>/<name>``,
  ``<cluster>//ServiceEntry/<ns>/<se>/<address>``.
- Enrollment: the workload's own ``istio.io/dataplane-mode`` label decides
  when present (``ambient`` enrolls; ``none`` or any other value does not, as
  the config loader warns); otherwise its namespace's label does. Endpoints of
  a ``MESH_EXTERNAL`` ServiceEntry ignore the namespace label (external hosts
  do not speak HBONE) unless labelled themselves.
- A WorkloadEntry's labels are ``spec.labels`` overlaid with
  ``metadata.labels`` (so ``ambient label`` works on it); its node is its
  ``ambient.io/node`` label, else ``""``. A WorkloadEntry or endpoint whose
  address is a hostname gets no address (with a warning).
- Canonical name and revision follow Istio's label precedence.
- ``MeshSnapshot.nodes``: an address for every node that runs a pod.
- Waypoints: Gateways of class ``istio-waypoint`` add their Deployment, Service
  and ServiceAccount, and ``istio.io/use-waypoint`` bindings are resolved as
  workloads and services are built (see ``waypoints``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import operator
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from ambient.api.workload import (
    ANNOTATION_APPLICATION_TUNNEL,
    ApplicationTunnel,
    IPAddress,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
    waypoint_of,
)
from ambient.config.configset import ConfigSet, Ref
from ambient.config.frozen import FrozenMap
from ambient.config.l7objects import L7Manifests
from ambient.config.resources import (
    LABEL_DATAPLANE_MODE,
    Deployment,
    Pod,
    ServiceEntry,
    WorkloadEntry,
)
from ambient.controlplane.allocate import AddressAllocator, AllocationKey
from ambient.controlplane.expand import (
    NO_OVERRIDES,
    LabelOverrides,
    ScheduledPod,
    expand_deployment,
)
from ambient.controlplane.expand import _relabel as relabel
from ambient.controlplane.policies import TranslationCache, build_policies
from ambient.controlplane.services import ServiceRegistry, entry_ports
from ambient.controlplane.snapshot import EMPTY, Delta, MeshSnapshot, Touched, diff
from ambient.controlplane.waypoints import WaypointBinder, WaypointObjects
from ambient.identity.spiffe import DEFAULT_TRUST_DOMAIN

__all__ = [
    "DEFAULT_CLUSTER_ID",
    "LABEL_NODE",
    "MeshIndex",
    "build_snapshot",
    "canonical_name",
    "canonical_revision",
    "tunnel_protocol",
]

DEFAULT_CLUSTER_ID = "Kubernetes"


def pod_uid(namespace: str, name: str, cluster_id: str = DEFAULT_CLUSTER_ID) -> str:
    """A pod's workload uid, as Istio names it: ``<cluster>//Pod/<namespace>/<name>``."""
    return f"{cluster_id}//Pod/{namespace}/{name}"


LABEL_NODE = "ambient.io/node"
_NAME_LABELS = ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
_REVISION_LABELS = ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")


def canonical_name(labels: Mapping[str, str], workload_name: str) -> str:
    """Istio's canonical service name: the first label present, else the workload name."""
    return next((labels[k] for k in _NAME_LABELS if labels.get(k)), workload_name)


def canonical_revision(labels: Mapping[str, str]) -> str:
    """Istio's canonical revision: the first label present, else ``latest``."""
    return next((labels[k] for k in _REVISION_LABELS if labels.get(k)), "latest")


def tunnel_protocol(
    labels: Mapping[str, str], namespace_labels: Mapping[str, str]
) -> TunnelProtocol:
    """HBONE if the workload is enrolled in ambient mode (see the module docstring)."""
    mode = labels.get(LABEL_DATAPLANE_MODE, namespace_labels.get(LABEL_DATAPLANE_MODE))
    return TunnelProtocol.HBONE if mode == "ambient" else TunnelProtocol.NONE


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _we_labels(entry: WorkloadEntry) -> FrozenMap[str, str]:
    return FrozenMap({**entry.spec.labels, **entry.meta.labels})


_Groups = Mapping[str, tuple[Any, ...]]
_INDEXED_KINDS = (
    "Namespace",
    "Pod",
    "Deployment",
    "Service",
    "WorkloadEntry",
    "ServiceEntry",
    "AuthorizationPolicy",
    "PeerAuthentication",
)
# Kinds whose change is applied by recomputing the whole index (rare, operator-driven
# changes); pods, Deployments, labels, health and policies are applied incrementally.
_REBUILD_KINDS = frozenset({"Namespace", "Service", "WorkloadEntry", "ServiceEntry", "Gateway"})


def _groups(config: ConfigSet) -> dict[str, tuple[Any, ...]]:
    """The objects of the kinds the index reads, by kind, each sorted by namespace and name."""
    found: dict[str, list[Any]] = {kind: [] for kind in _INDEXED_KINDS}
    for ref in sorted(config.objects, key=lambda r: (r.kind, r.namespace, r.name)):
        bucket = found.get(ref.kind)
        if bucket is not None:
            bucket.append(config.objects[ref])
    return {kind: tuple(objs) for kind, objs in found.items()}


def _allocate(
    groups: _Groups, pods: Iterable[ScheduledPod], allocator: AddressAllocator
) -> dict[AllocationKey, IPAddress]:
    explicit: dict[AllocationKey, IPAddress] = {}
    wanted: set[AllocationKey] = set()
    for entry in pods:
        pod = entry.pod
        key = AllocationKey("Pod", pod.meta.namespace, pod.meta.name)
        ip = _ip(pod.status.pod_ip) if pod.status.pod_ip else None
        if ip is None:
            wanted.add(key)
        else:
            explicit[key] = ip
        wanted.add(AllocationKey("Node", "", pod.spec.node_name))
    for svc in groups["Service"]:
        if svc.spec.headless:
            continue
        key = AllocationKey("Service", svc.meta.namespace, svc.meta.name)
        ip = _ip(svc.spec.cluster_ip) if svc.spec.cluster_ip else None
        if ip is None:
            wanted.add(key)
        else:
            explicit[key] = ip
    for we in groups["WorkloadEntry"]:
        if (ip := _ip(we.spec.address)) is not None:
            explicit[AllocationKey("WorkloadEntry", we.meta.namespace, we.meta.name)] = ip
    taken: set[IPAddress] = set()
    for se in groups["ServiceEntry"]:
        for text in se.spec.addresses:
            network = ipaddress.ip_network(text, strict=False)
            if network.num_addresses == 1:
                taken.add(network.network_address)
        taken.update(ip for ep in se.spec.endpoints if (ip := _ip(ep.address)) is not None)
    return allocator.sync(explicit, wanted, taken)


def _alloc_input(entry: ScheduledPod) -> tuple[str | None, str]:
    """What of a pod its address allocation depends on."""
    return entry.pod.status.pod_ip, entry.pod.spec.node_name


class _Builder:
    """Workloads of one snapshot; collects warnings."""

    def __init__(
        self,
        namespaces: Mapping[str, Mapping[str, str]],
        registry: ServiceRegistry,
        trust_domain: str,
        cluster_id: str,
        binder: WaypointBinder,
    ) -> None:
        self.registry = registry
        self.binder = binder
        self.trust_domain = trust_domain
        self.cluster_id = cluster_id
        self.namespaces = namespaces
        self.workloads: dict[str, Workload] = {}
        self.warnings: list[str] = []

    def add(self, workload: Workload) -> None:
        workload = self.binder.workload(workload)
        if workload.uid in self.workloads:
            self.warnings.append(f"workload {workload.uid} is defined twice; the first is kept")
            return
        self.workloads[workload.uid] = workload

    def pod_workload(self, entry: ScheduledPod, address: IPAddress) -> Workload:
        pod, ns = entry.pod, entry.pod.meta.namespace
        labels = pod.meta.labels
        workload = Workload(
            uid=pod_uid(ns, pod.meta.name, self.cluster_id),
            name=pod.meta.name,
            namespace=ns,
            addresses=(address,),
            service_account=pod.spec.service_account_name,
            node=pod.spec.node_name,
            tunnel_protocol=tunnel_protocol(labels, self.namespaces.get(ns, {})),
            trust_domain=self.trust_domain,
            cluster_id=self.cluster_id,
            workload_name=entry.workload_name,
            workload_type=entry.workload_type,
            canonical_name=canonical_name(labels, entry.workload_name),
            canonical_revision=canonical_revision(labels),
            services=self.registry.for_pod(pod),
            labels=labels,
            local=True,
            application_tunnel=_application_tunnel(pod.meta.annotations),
            # Read from an API server: the pod's Ready condition (None: the runtime reports).
            status=WorkloadStatus.UNHEALTHY
            if pod.status.ready is False
            else WorkloadStatus.HEALTHY,
        )
        return self.binder.workload(workload)

    def workload_entry(self, entry: WorkloadEntry) -> None:
        ns, name, spec = entry.meta.namespace, entry.meta.name, entry.spec
        labels = _we_labels(entry)
        self.add(
            Workload(
                uid=f"{self.cluster_id}//WorkloadEntry/{ns}/{name}",
                name=name,
                namespace=ns,
                addresses=self._addresses(spec.address, f"WorkloadEntry {ns}/{name}"),
                service_account=spec.service_account,
                node=labels.get(LABEL_NODE, ""),
                tunnel_protocol=tunnel_protocol(labels, self.namespaces.get(ns, {})),
                trust_domain=self.trust_domain,
                cluster_id=self.cluster_id,
                network=spec.network,
                workload_name=name,
                workload_type="workloadentry",
                canonical_name=canonical_name(labels, name),
                canonical_revision=canonical_revision(labels),
                services=self.registry.for_workload_entry(ns, labels, spec.ports),
                labels=labels,
                local=False,
            )
        )

    def service_entry(self, entry: ServiceEntry) -> None:
        ns, name = entry.meta.namespace, entry.meta.name
        internal = entry.spec.location == "MESH_INTERNAL"
        namespace_labels: Mapping[str, str] = self.namespaces.get(ns, {}) if internal else {}
        for ep in entry.spec.endpoints:
            ports = entry_ports(entry, ep.ports)
            self.add(
                Workload(
                    uid=f"{self.cluster_id}//ServiceEntry/{ns}/{name}/{ep.address}",
                    name=name,
                    namespace=ns,
                    addresses=self._addresses(ep.address, f"ServiceEntry {ns}/{name} endpoint"),
                    service_account=ep.service_account,
                    node="",
                    tunnel_protocol=tunnel_protocol(ep.labels, namespace_labels),
                    trust_domain=self.trust_domain,
                    cluster_id=self.cluster_id,
                    network=ep.network,
                    workload_name=name,
                    workload_type="workloadentry",
                    canonical_name=canonical_name(ep.labels, name),
                    canonical_revision=canonical_revision(ep.labels),
                    services=FrozenMap({f"{ns}/{host}": ports for host in entry.spec.hosts}),
                    labels=ep.labels,
                    local=False,
                )
            )

    def _addresses(self, text: str, where: str) -> tuple[IPAddress, ...]:
        ip = _ip(text)
        if ip is None:
            self.warnings.append(
                f"{where}: address {text!r} is not an IP address; the workload gets no "
                "address (hostname workloads are not supported yet)"
            )
            return ()
        return (ip,)


def build_snapshot(
    config: ConfigSet,
    allocator: AddressAllocator,
    *,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    cluster_id: str = DEFAULT_CLUSTER_ID,
    pod_labels: LabelOverrides = NO_OVERRIDES,
) -> MeshSnapshot:
    """The ambient index of ``config``; ``pod_labels`` overrides labels of pods by (ns, name).

    Raises ``AddressConflict`` when two objects claim the same explicit address.
    """
    index = MeshIndex(allocator, trust_domain=trust_domain, cluster_id=cluster_id)
    return index.update(config, pod_labels)[0]


class _Empty:
    """Stands for "nothing built yet" in ``MeshIndex``."""


class MeshIndex:
    """The ambient index, kept current: each change recomputes only what it touches.

    ``update(config, pod_labels, ready)`` returns the new snapshot and the ``Delta``
    from the previous one. A changed or added or removed Pod, a Deployment (its pods),
    a pod label override or a pod's health recompute only those pods' workloads (their
    services through the registry's selector index); an AuthorizationPolicy or
    PeerAuthentication only its translation; addresses are re-allocated only when a
    pod's allocation inputs (explicit address, node) or the set of pods change. A
    change to a Namespace, Service, WorkloadEntry or ServiceEntry rebuilds the index
    (cached Deployment expansions and policy translations are reused). The result is
    always the snapshot ``build_snapshot`` gives for the same inputs and allocator
    (``tests/unit/controlplane/test_incremental.py`` checks it on random changes).

    ``ready``: None when health is not tracked, else the uids of ready pods (pods
    not in it are ``UNHEALTHY``).
    """

    def __init__(
        self,
        allocator: AddressAllocator,
        *,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        cluster_id: str = DEFAULT_CLUSTER_ID,
    ) -> None:
        self.allocator = allocator
        self.trust_domain = trust_domain
        self.cluster_id = cluster_id
        self.snapshot = EMPTY
        self.full_builds = 0  # how many updates rebuilt everything (for tests)
        self._config: ConfigSet | _Empty = _Empty()
        self._overrides: LabelOverrides = NO_OVERRIDES
        self._ready: frozenset[str] | None = None
        self._expansions: dict[Ref, tuple[Deployment, tuple[Pod, ...], tuple[str, ...]]] = {}
        self._policy_cache: TranslationCache = {}
        self._deployment_pods: set[tuple[str, str]] = set()  # keys Deployments' replicas claim
        self._groups: _Groups = {}
        self._base: dict[tuple[str, str], ScheduledPod] = {}  # before label overrides
        self._pods: dict[tuple[str, str], ScheduledPod] = {}  # after
        self._raw: dict[str, Workload] = {}  # pod workloads before health
        self._addresses: dict[AllocationKey, IPAddress] = {}
        self._builder: _Builder | None = None
        self._static: dict[str, Workload] = {}  # WorkloadEntry and ServiceEntry workloads
        self._warnings: dict[str, tuple[str, ...]] = {}
        self._waypoint_objects = WaypointObjects()
        self._waypoint_warnings: tuple[str, ...] = ()
        self._l7 = L7Manifests()

    # -- entry point -----------------------------------------------------------------

    def update(
        self,
        config: ConfigSet,
        pod_labels: LabelOverrides = NO_OVERRIDES,
        ready: AbstractSet[str] | None = None,
        *,
        changed: Iterable[Ref] | None = None,
    ) -> tuple[MeshSnapshot, Delta]:
        """Make the index that of ``config`` (see the class docstring).

        ``changed``: the refs whose object differs from the previous ``config``, when
        the caller knows them (a source of single-object changes); else they are found
        by comparing the two configurations.

        Raises ``AddressConflict`` (the index is unchanged) when two objects claim the
        same explicit address.
        """
        old = self.snapshot
        config, self._waypoint_warnings = self._expand(config)
        frozen_ready = None if ready is None else frozenset(ready)
        previous = self._config
        if isinstance(previous, _Empty):
            changed = None
        elif changed is None:
            changed = _changed_refs(previous, config)
        else:
            changed = list(changed)
        touched: Touched | None = None
        if (
            changed is None
            or (self._ready is None) != (frozen_ready is None)
            or any(ref.kind in _REBUILD_KINDS for ref in changed)
        ):
            self._rebuild(config, pod_labels, frozen_ready)
        else:
            touched = self._incremental(config, changed, pod_labels, frozen_ready)
            if touched is None:  # a case the incremental path does not cover
                self._rebuild(config, pod_labels, frozen_ready)
        # What waypoints enforce rides along: only the L7 objects the change touched.
        l7_touched = self._l7.update(config, changed)
        if self.snapshot.l7_manifests is not self._l7.current:
            self.snapshot = dataclasses.replace(self.snapshot, l7_manifests=self._l7.current)
        if touched is None:
            return self.snapshot, diff(old, self.snapshot)
        touched = dataclasses.replace(touched, l7_manifests=l7_touched)
        return self.snapshot, diff(old, self.snapshot, touched)

    # -- what a source of objects may do differently (see ``controlplane.cluster``) ---

    def _expand(self, config: ConfigSet) -> tuple[ConfigSet, tuple[str, ...]]:
        """``config`` with the objects its waypoint Gateways stand for, and warnings."""
        return self._waypoint_objects(config)

    def _admits(self, pod: Pod) -> bool:
        """Whether a Pod object is a workload of the index (every declared one is)."""
        return True

    def _addresses_of(
        self, groups: _Groups, pods: Mapping[tuple[str, str], ScheduledPod]
    ) -> dict[AllocationKey, IPAddress]:
        """Every address: explicit ones, the others from the allocator."""
        return _allocate(groups, pods.values(), self.allocator)

    def _readdress(
        self,
        groups: _Groups,
        pods: dict[tuple[str, str], ScheduledPod],
        dirty: set[tuple[str, str]],
    ) -> tuple[dict[tuple[str, str], ScheduledPod], dict[AllocationKey, IPAddress]] | None:
        """The pods (in order) and addresses after the ``dirty`` pods changed; pods whose
        address moved join ``dirty``. None: a Service's address moved (rebuild)."""
        addresses = self._addresses
        reallocate = any(
            (key in pods) != (key in self._pods)
            or _alloc_input(pods[key]) != _alloc_input(self._pods[key])
            for key in dirty
            if key in pods or key in self._pods
        )
        if any((key in pods) != (key in self._pods) for key in dirty):
            pods = {key: pods[key] for key in sorted(pods)}
            reallocate = True
        if reallocate:
            addresses = _allocate(groups, pods.values(), self.allocator)
            for holder, address in addresses.items():
                if self._addresses.get(holder) != address:
                    if holder.kind == "Service":
                        return None  # a pod's explicit address moved a Service VIP
                    if holder.kind == "Pod":
                        dirty.add((holder.namespace, holder.name))
        return pods, addresses

    def _nodes_of(
        self,
        addresses: Mapping[AllocationKey, IPAddress],
        pods: Mapping[tuple[str, str], ScheduledPod],
        dirty: AbstractSet[tuple[str, str]] | None,
    ) -> Mapping[str, IPAddress]:
        """Node addresses; ``dirty``: the pods that changed since the last snapshot (None:
        everything)."""
        if dirty is not None and addresses is self._addresses:
            return self.snapshot.nodes
        return _nodes(addresses)

    def _sorted_pods(
        self, pods: dict[tuple[str, str], ScheduledPod]
    ) -> dict[tuple[str, str], ScheduledPod]:
        """``pods`` in (namespace, name) order: the order addresses are allocated in."""
        return {key: pods[key] for key in sorted(pods)}

    # -- everything ------------------------------------------------------------------

    def _rebuild(
        self, config: ConfigSet, overrides: LabelOverrides, ready: frozenset[str] | None
    ) -> None:
        groups = _groups(config)
        base, warnings = self._schedule(groups)
        pods = _relabelled(base, overrides)
        addresses = self._addresses_of(groups, pods)
        vips = {(k.namespace, k.name): a for k, a in addresses.items() if k.kind == "Service"}
        registry = ServiceRegistry(config, vips, groups["Service"], groups["ServiceEntry"])
        namespaces = {ns.meta.name: ns.meta.labels for ns in config.namespaces()}
        binder = WaypointBinder(config)
        registry.services = {key: binder.service(svc) for key, svc in registry.services.items()}
        builder = _Builder(namespaces, registry, self.trust_domain, self.cluster_id, binder)
        raw: dict[str, Workload] = {}
        for key, entry in pods.items():
            workload = builder.pod_workload(entry, addresses[AllocationKey("Pod", *key)])
            raw[workload.uid] = workload
        builder.workloads = dict(raw)
        for we in groups["WorkloadEntry"]:
            builder.workload_entry(we)
        for se in groups["ServiceEntry"]:
            builder.service_entry(se)
        static = {uid: w for uid, w in builder.workloads.items() if uid not in raw}
        policies = build_policies(config, cache=self._policy_cache, objects=groups)
        self.full_builds += 1
        self._config, self._overrides, self._ready = config, overrides, ready
        self._groups, self._base, self._pods, self._raw = groups, base, pods, raw
        self._addresses, self._builder, self._static = addresses, builder, static
        self._warnings = {
            "pods": warnings,
            "services": tuple(registry.warnings),
            "workloads": tuple(builder.warnings),
            "policies": policies.warnings,
            "waypoints": tuple(binder.warnings),
        }
        workloads = {uid: _with_health(w, ready) for uid, w in raw.items()}
        workloads.update(static)
        self.snapshot = MeshSnapshot(
            workloads,
            registry.services,
            self._all_warnings(),
            self._nodes_of(addresses, pods, None),
            policies.authorizations,
            policies.peer_authentications,
        )

    def _all_warnings(self) -> tuple[str, ...]:
        w = self._warnings
        return (
            *self._waypoint_warnings,
            *w["pods"],
            *w["services"],
            *w["workloads"],
            *w.get("waypoints", ()),
            *w["policies"],
        )

    def _schedule(
        self, groups: _Groups
    ) -> tuple[dict[tuple[str, str], ScheduledPod], tuple[str, ...]]:
        """``scheduled_pods`` without overrides, reusing the expansion of unchanged Deployments."""
        found: dict[tuple[str, str], ScheduledPod] = {
            (p.meta.namespace, p.meta.name): ScheduledPod(p)
            for p in groups["Pod"]
            if self._admits(p)
        }
        warnings: list[str] = []
        expansions = {}
        for deployment in groups["Deployment"]:
            ref = Ref("Deployment", deployment.meta.namespace, deployment.meta.name)
            cached = self._expansions.get(ref)
            if cached is None or cached[0] is not deployment:
                cached = (deployment, *expand_deployment(deployment))
            expansions[ref] = cached
            _, pods, problems = cached
            warnings += problems
            for pod in pods:
                key = (pod.meta.namespace, pod.meta.name)
                if key in found:
                    warnings.append(
                        f"Deployment {key[0]}/{deployment.meta.name}: its pod {key[1]} has the "
                        "name of a declared Pod; that replica is not created"
                    )
                    continue
                found[key] = ScheduledPod(pod, deployment)
        self._expansions = expansions
        self._deployment_pods = {
            (p.meta.namespace, p.meta.name) for _, pods, _ in expansions.values() for p in pods
        }
        return self._sorted_pods(found), tuple(warnings)

    # -- a few things ----------------------------------------------------------------

    def _declared_only(self, changed: list[Ref]) -> bool:
        """Whether the changed Pods are declared pods no Deployment's replica competes with."""
        names = self._deployment_pods
        return not any((ref.namespace, ref.name) in names for ref in changed)

    def _incremental(
        self,
        config: ConfigSet,
        changed: list[Ref],
        overrides: LabelOverrides,
        ready: frozenset[str] | None,
    ) -> Touched | None:
        """Apply a change of pods, Deployments, labels, health or policies; None: rebuild."""
        assert self._builder is not None
        groups = self._groups
        kinds = {ref.kind for ref in changed}
        base, dirty = self._base, set[tuple[str, str]]()
        pod_warnings = self._warnings["pods"]
        if kinds == {"Pod"} and self._declared_only(changed):
            # Only declared pods changed (the common case): patch the schedule in place;
            # the stale "Pod" group is never read before the next full grouping.
            base = dict(self._base)
            for ref in changed:
                key = (ref.namespace, ref.name)
                obj = config.objects.get(ref)
                if isinstance(obj, Pod) and self._admits(obj):
                    base[key] = ScheduledPod(obj)
                else:
                    base.pop(key, None)
                dirty.add(key)
            if any((key in base) != (key in self._base) for key in dirty):
                base = self._sorted_pods(base)
        elif kinds & {"Pod", "Deployment"}:
            groups = _groups(config)
            old_base = self._base
            old_expansions = dict(self._expansions)
            base, pod_warnings = self._schedule(groups)
            for ref in changed:
                if ref.kind == "Pod":
                    dirty.add((ref.namespace, ref.name))
                elif ref.kind == "Deployment":
                    for expansion in (old_expansions.get(ref), self._expansions.get(ref)):
                        if expansion is not None:
                            dirty.update((p.meta.namespace, p.meta.name) for p in expansion[1])
            for key in list(dirty):
                before, after = old_base.get(key), base.get(key)
                same = before is not None and after is not None and before.pod is after.pod
                if (
                    same
                    and before is not None
                    and after is not None
                    and before.owner is after.owner
                ):
                    dirty.discard(key)
        elif kinds & {"AuthorizationPolicy", "PeerAuthentication"}:
            groups = _groups(config)
        if overrides is not self._overrides:
            dirty.update(
                key
                for key in self._overrides.keys() | overrides.keys()
                if self._overrides.get(key) != overrides.get(key)
            )
        pods = self._pods
        addresses = self._addresses
        if dirty:
            pods = dict(self._pods)
            for key in dirty:
                entry = base.get(key)
                if entry is None:
                    pods.pop(key, None)
                else:
                    pods[key] = _relabel_entry(entry, overrides.get(key))
            readdressed = self._readdress(groups, pods, dirty)
            if readdressed is None:
                return None
            pods, addresses = readdressed
        raw = self._raw
        uids: set[str] = set()
        if dirty:
            raw = dict(raw)
            for key in dirty:
                uid = pod_uid(key[0], key[1], self.cluster_id)
                uids.add(uid)
                entry = pods.get(key)
                if entry is None:
                    raw.pop(uid, None)
                else:
                    address = addresses[AllocationKey("Pod", *key)]
                    raw[uid] = self._builder.pod_workload(entry, address)
        if ready != self._ready:
            assert ready is not None and self._ready is not None
            uids.update(u for u in ready ^ self._ready if u in raw)
        workloads: Mapping[str, Workload] = self.snapshot.workloads
        if uids:
            patched = dict(workloads.items())
            for uid in uids:
                if uid in raw:
                    patched[uid] = _with_health(raw[uid], ready)
                else:
                    patched.pop(uid, None)
            workloads = patched
        authorizations = self.snapshot.authorizations
        peers = self.snapshot.peer_authentications
        policy_warnings = self._warnings["policies"]
        if kinds & {"AuthorizationPolicy", "PeerAuthentication"}:
            policies = build_policies(config, cache=self._policy_cache, objects=groups)
            authorizations, peers = policies.authorizations, policies.peer_authentications
            policy_warnings = policies.warnings
        nodes = self._nodes_of(addresses, pods, dirty)
        self._config, self._overrides, self._ready = config, overrides, ready
        self._groups, self._base, self._pods, self._raw = groups, base, pods, raw
        self._addresses = addresses
        self._warnings = {**self._warnings, "pods": pod_warnings, "policies": policy_warnings}
        old = self.snapshot
        self.snapshot = MeshSnapshot(
            workloads,
            old.services,
            self._all_warnings(),
            nodes,
            authorizations,
            peers,
        )
        return Touched(
            workloads=frozenset(uids),
            authorizations=frozenset(old.authorizations.keys() | authorizations.keys())
            if authorizations is not old.authorizations
            else frozenset(),
            peer_authentications=frozenset(old.peer_authentications.keys() | peers.keys())
            if peers is not old.peer_authentications
            else frozenset(),
        )


def _changed_refs(old: ConfigSet, new: ConfigSet) -> list[Ref]:
    """Refs whose object differs (by identity: objects are immutable) between two configs."""
    if old is new or old.objects is new.objects:
        return []
    before, after = old.objects, new.objects
    if len(before) == len(after) and all(map(operator.is_, before.keys(), after.keys())):
        # A relabelled config keeps its keys in place: compare position by position, by
        # identity, in C (no hashing of refs); otherwise look each ref up.
        return list(
            itertools.compress(after.keys(), map(operator.is_not, before.values(), after.values()))
        )
    changed = [ref for ref, obj in after.items() if before.get(ref) is not obj]
    if len(before) != len(after) - sum(1 for ref in changed if ref not in before):
        changed += [ref for ref in before if ref not in after]
    return changed


def _relabel_entry(entry: ScheduledPod, override: Mapping[str, str | None] | None) -> ScheduledPod:
    if override is None:
        return entry
    return dataclasses.replace(entry, pod=relabel(entry.pod, override))


def _relabelled(
    base: Mapping[tuple[str, str], ScheduledPod], overrides: LabelOverrides
) -> dict[tuple[str, str], ScheduledPod]:
    return {key: _relabel_entry(entry, overrides.get(key)) for key, entry in base.items()}


def _with_health(workload: Workload, ready: AbstractSet[str] | None) -> Workload:
    # A waypoint's pod has no processes of its own: its node proxy serves it as soon as
    # the pod is scheduled there (see ambient.ztunnel.waypoints).
    if ready is None or workload.uid in ready or waypoint_of(workload) is not None:
        return workload
    return dataclasses.replace(workload, status=WorkloadStatus.UNHEALTHY)


def _nodes(addresses: Mapping[AllocationKey, IPAddress]) -> dict[str, IPAddress]:
    return {k.name: addresses[k] for k in sorted(k for k in addresses if k.kind == "Node")}


def _application_tunnel(annotations: Mapping[str, str]) -> ApplicationTunnel:
    """``ambient.io/application-tunnel: PROXY`` asks for a PROXY v2 header with the peer identity."""
    value = annotations.get(ANNOTATION_APPLICATION_TUNNEL, "").upper()
    return ApplicationTunnel.PROXY if value == "PROXY" else ApplicationTunnel.NONE
