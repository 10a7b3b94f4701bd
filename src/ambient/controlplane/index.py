"""The ambient index: a ``ConfigSet`` becomes workloads and services (istiod's job for ztunnel).

``build_snapshot`` is pure apart from the address allocator. Decisions:

- Workloads: every pod (declared, or expanded from a Deployment, see
  ``expand``), every WorkloadEntry and every inline ServiceEntry endpoint
  (``local=False``); what each becomes (uids, enrollment, labels) is in
  ``workloads``.
- ``MeshSnapshot.nodes``: an address for every node that runs a pod.
- Waypoints: Gateways of class ``istio-waypoint`` add their Deployment, Service
  and ServiceAccount, and ``istio.io/use-waypoint`` bindings are resolved as
  workloads and services are built (see ``waypoints``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from ambient.config.configset import ConfigSet, Ref, changed_refs
from ambient.config.l7objects import L7Manifests
from ambient.config.resources import (
    Deployment,
    Pod,
)
from ambient.controlplane.allocate import AddressAllocator, AllocationKey
from ambient.controlplane.expand import (
    NO_OVERRIDES,
    LabelOverrides,
    ScheduledPod,
    expand_deployment,
    relabel_entry,
    relabelled,
)
from ambient.controlplane.policies import TranslationCache, build_policies
from ambient.controlplane.services import ServiceRegistry
from ambient.controlplane.snapshot import EMPTY, Delta, MeshSnapshot, Touched, diff
from ambient.controlplane.waypoints import WaypointBinder, WaypointObjects
from ambient.controlplane.workloads import (
    DEFAULT_CLUSTER_ID,
    WorkloadBuilder,
    ip_or_none,
    pod_uid,
    with_health,
)
from ambient.identity.spiffe import DEFAULT_TRUST_DOMAIN
from ambient.state.workload import (
    IPAddress,
    Workload,
)

__all__ = ["MeshIndex", "build_snapshot"]

_Groups = Mapping[str, tuple[Any, ...]]
_Key = tuple[str, str]  # a pod: (namespace, name)
_POLICY_KINDS = frozenset({"AuthorizationPolicy", "PeerAuthentication"})
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
        ip = ip_or_none(pod.status.pod_ip) if pod.status.pod_ip else None
        if ip is None:
            wanted.add(key)
        else:
            explicit[key] = ip
        wanted.add(AllocationKey("Node", "", pod.spec.node_name))
    for svc in groups["Service"]:
        if svc.spec.headless:
            continue
        key = AllocationKey("Service", svc.meta.namespace, svc.meta.name)
        ip = ip_or_none(svc.spec.cluster_ip) if svc.spec.cluster_ip else None
        if ip is None:
            wanted.add(key)
        else:
            explicit[key] = ip
    for we in groups["WorkloadEntry"]:
        if (ip := ip_or_none(we.spec.address)) is not None:
            explicit[AllocationKey("WorkloadEntry", we.meta.namespace, we.meta.name)] = ip
    taken: set[IPAddress] = set()
    for se in groups["ServiceEntry"]:
        for text in se.spec.addresses:
            network = ipaddress.ip_network(text, strict=False)
            if network.num_addresses == 1:
                taken.add(network.network_address)
        taken.update(ip for ep in se.spec.endpoints if (ip := ip_or_none(ep.address)) is not None)
    return allocator.sync(explicit, wanted, taken)


def _alloc_input(entry: ScheduledPod) -> tuple[str | None, str]:
    """What of a pod its address allocation depends on."""
    return entry.pod.status.pod_ip, entry.pod.spec.node_name


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
        self._builder: WorkloadBuilder | None = None
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
            changed = changed_refs(previous, config)
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
        pods = relabelled(base, overrides)
        addresses = self._addresses_of(groups, pods)
        vips = {(k.namespace, k.name): a for k, a in addresses.items() if k.kind == "Service"}
        registry = ServiceRegistry(config, vips, groups["Service"], groups["ServiceEntry"])
        namespaces = {ns.meta.name: ns.meta.labels for ns in config.namespaces()}
        binder = WaypointBinder(config)
        registry.services = {key: binder.service(svc) for key, svc in registry.services.items()}
        builder = WorkloadBuilder(namespaces, registry, self.trust_domain, self.cluster_id, binder)
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
        workloads = {uid: with_health(w, ready) for uid, w in raw.items()}
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
        """Apply a change of pods, Deployments, labels, health or policies; None: rebuild.

        Each kind of change names the pods it makes dirty (``_pod_changes``,
        ``_label_changes``); only those are placed, addressed and built again
        (``_place``, ``_pod_workloads``); health and policies patch what they touch."""
        kinds = {ref.kind for ref in changed}
        groups, base, dirty, pod_warnings = self._pod_changes(config, changed, kinds)
        dirty |= self._label_changes(overrides)
        placed = self._place(groups, base, dirty, overrides)
        if placed is None:
            return None
        pods, addresses = placed
        raw, uids = self._pod_workloads(dirty, pods, addresses)
        uids |= self._health_changes(ready, raw)
        workloads = self._patched_workloads(uids, raw, ready)
        authorizations, peers, policy_warnings = self._policy_changes(config, kinds, groups)
        nodes = self._nodes_of(addresses, pods, dirty)
        self._config, self._overrides, self._ready = config, overrides, ready
        self._groups, self._base, self._pods, self._raw = groups, base, pods, raw
        self._addresses = addresses
        self._warnings = {**self._warnings, "pods": pod_warnings, "policies": policy_warnings}
        old = self.snapshot
        self.snapshot = MeshSnapshot(
            workloads, old.services, self._all_warnings(), nodes, authorizations, peers
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

    def _pod_changes(
        self, config: ConfigSet, changed: list[Ref], kinds: set[str]
    ) -> tuple[_Groups, dict[_Key, ScheduledPod], set[_Key], tuple[str, ...]]:
        """The grouped objects, the schedule (before label overrides), the pods whose
        object or owner changed, and the scheduling warnings after ``changed``."""
        if kinds == {"Pod"} and self._declared_only(changed):
            # Only declared pods changed (the common case): patch the schedule in place;
            # the stale "Pod" group is never read before the next full grouping.
            base, dirty = self._patch_declared_pods(config, changed)
            return self._groups, base, dirty, self._warnings["pods"]
        if kinds & {"Pod", "Deployment"}:
            groups = _groups(config)
            base, dirty, warnings = self._reschedule(groups, changed)
            return groups, base, dirty, warnings
        if kinds & _POLICY_KINDS:
            return _groups(config), self._base, set(), self._warnings["pods"]
        return self._groups, self._base, set(), self._warnings["pods"]

    def _patch_declared_pods(
        self, config: ConfigSet, changed: list[Ref]
    ) -> tuple[dict[_Key, ScheduledPod], set[_Key]]:
        base = dict(self._base)
        dirty: set[_Key] = set()
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
        return base, dirty

    def _reschedule(
        self, groups: _Groups, changed: list[Ref]
    ) -> tuple[dict[_Key, ScheduledPod], set[_Key], tuple[str, ...]]:
        """Schedule again (reusing unchanged expansions); dirty: the changed Pods and the
        replicas of changed Deployments, less those whose object and owner are the same."""
        old_base = self._base
        old_expansions = dict(self._expansions)
        base, warnings = self._schedule(groups)
        dirty: set[_Key] = set()
        for ref in changed:
            if ref.kind == "Pod":
                dirty.add((ref.namespace, ref.name))
            elif ref.kind == "Deployment":
                for expansion in (old_expansions.get(ref), self._expansions.get(ref)):
                    if expansion is not None:
                        dirty.update((p.meta.namespace, p.meta.name) for p in expansion[1])
        for key in list(dirty):
            before, after = old_base.get(key), base.get(key)
            if (
                before is not None
                and after is not None
                and before.pod is after.pod
                and before.owner is after.owner
            ):
                dirty.discard(key)
        return base, dirty, warnings

    def _label_changes(self, overrides: LabelOverrides) -> set[_Key]:
        """The pods whose label override (``ambient label``) changed."""
        if overrides is self._overrides:
            return set()
        return {
            key
            for key in self._overrides.keys() | overrides.keys()
            if self._overrides.get(key) != overrides.get(key)
        }

    def _place(
        self,
        groups: _Groups,
        base: Mapping[_Key, ScheduledPod],
        dirty: set[_Key],
        overrides: LabelOverrides,
    ) -> tuple[dict[_Key, ScheduledPod], dict[AllocationKey, IPAddress]] | None:
        """The pods (relabelled) and addresses after the ``dirty`` pods changed; pods whose
        address moved join ``dirty``. None: a Service's address moved (rebuild)."""
        if not dirty:
            return self._pods, self._addresses
        pods = dict(self._pods)
        for key in dirty:
            entry = base.get(key)
            if entry is None:
                pods.pop(key, None)
            else:
                pods[key] = relabel_entry(entry, overrides.get(key))
        return self._readdress(groups, pods, dirty)

    def _pod_workloads(
        self,
        dirty: AbstractSet[_Key],
        pods: Mapping[_Key, ScheduledPod],
        addresses: Mapping[AllocationKey, IPAddress],
    ) -> tuple[dict[str, Workload], set[str]]:
        """Pod workloads (before health) with the ``dirty`` pods built again, and their uids."""
        assert self._builder is not None
        if not dirty:
            return self._raw, set()
        raw = dict(self._raw)
        uids: set[str] = set()
        for key in dirty:
            uid = pod_uid(key[0], key[1], self.cluster_id)
            uids.add(uid)
            entry = pods.get(key)
            if entry is None:
                raw.pop(uid, None)
            else:
                raw[uid] = self._builder.pod_workload(entry, addresses[AllocationKey("Pod", *key)])
        return raw, uids

    def _health_changes(
        self, ready: frozenset[str] | None, raw: Mapping[str, Workload]
    ) -> set[str]:
        """The uids of pod workloads whose readiness changed."""
        if ready == self._ready:
            return set()
        assert ready is not None and self._ready is not None
        return {u for u in ready ^ self._ready if u in raw}

    def _patched_workloads(
        self, uids: AbstractSet[str], raw: Mapping[str, Workload], ready: frozenset[str] | None
    ) -> Mapping[str, Workload]:
        """The snapshot's workloads with ``uids`` replaced (health applied) or removed."""
        workloads: Mapping[str, Workload] = self.snapshot.workloads
        if not uids:
            return workloads
        patched = dict(workloads.items())
        for uid in uids:
            if uid in raw:
                patched[uid] = with_health(raw[uid], ready)
            else:
                patched.pop(uid, None)
        return patched

    def _policy_changes(
        self, config: ConfigSet, kinds: set[str], groups: _Groups
    ) -> tuple[Any, Any, tuple[str, ...]]:
        """Authorizations, PeerAuthentications and their warnings: translated again (from
        the cache) only when a policy changed."""
        if not kinds & _POLICY_KINDS:
            old = self.snapshot
            return old.authorizations, old.peer_authentications, self._warnings["policies"]
        policies = build_policies(config, cache=self._policy_cache, objects=groups)
        return policies.authorizations, policies.peer_authentications, policies.warnings


def _nodes(addresses: Mapping[AllocationKey, IPAddress]) -> dict[str, IPAddress]:
    return {k.name: addresses[k] for k in sorted(k for k in addresses if k.kind == "Node")}
