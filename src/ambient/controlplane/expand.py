"""The pods that exist: those declared, plus ``replicas`` pods per Deployment.

Decisions:

- A Deployment's pods are named as Kubernetes names them,
  ``<deployment>-<pod-template-hash>-<5 chars>``, but deterministically: the
  hash is FNV-1a of the template (rendered canonically) encoded as Kubernetes
  does (10 characters of ``bcdfghjklmnpqrstvwxz2456789``), and the suffix
  comes from the replica index. Editing the template renames (and so
  re-addresses) the pods, as a rollout would; scaling keeps existing names.
- Pods get the template's labels plus ``pod-template-hash``, and its
  annotations.
- Kubernetes has no per-replica node; the Deployment annotation
  ``ambient.io/nodes: "node-1,node-2"`` places replica ``i`` on
  ``nodes[i % len(nodes)]``. Without it every replica runs on the template's
  ``spec.nodeName`` (default ``node-1``). Invalid entries are skipped with a
  warning.
- Per-pod label overrides (``ambient label pod`` on a Deployment's pod, which
  is in no manifest) are applied here: a value of None removes the label.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from ambient.config import rules
from ambient.config.configset import ConfigSet
from ambient.config.frozen import FrozenMap
from ambient.config.resources import Deployment, ObjectMeta, Pod, PodTemplate

__all__ = [
    "ANNOTATION_NODES",
    "LABEL_POD_TEMPLATE_HASH",
    "NO_OVERRIDES",
    "LabelOverrides",
    "ScheduledPod",
    "expand_deployment",
    "pod_name",
    "relabel_entry",
    "relabelled",
    "replica_nodes",
    "scheduled_pods",
    "template_hash",
]

ANNOTATION_NODES = "ambient.io/nodes"
LABEL_POD_TEMPLATE_HASH = "pod-template-hash"
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.SafeEncodeString
_MAX_GENERATED_PREFIX = 58  # 63 - 5, as Kubernetes' generateName

LabelOverrides = Mapping[tuple[str, str], Mapping[str, str | None]]
"""(namespace, pod name) -> label -> value, or None to remove the label."""
NO_OVERRIDES: LabelOverrides = FrozenMap()


@dataclass(frozen=True)
class ScheduledPod:
    """A pod and the Deployment it belongs to (None for a pod declared directly)."""

    pod: Pod
    owner: Deployment | None = None

    @property
    def workload_name(self) -> str:
        """The owning Deployment's name, else the one a cluster's pod's controller
        implies (``Pod.workload``), else the pod's."""
        if self.owner:
            return self.owner.meta.name
        return self.pod.workload[0] if self.pod.workload else self.pod.meta.name

    @property
    def workload_type(self) -> str:
        """``deployment``, ``cronjob``, ``job`` or ``pod``."""
        if self.owner:
            return "deployment"
        return self.pod.workload[1] if self.pod.workload else "pod"


def _canonical(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    return value


def _safe_encode(text: str) -> str:
    return "".join(SAFE_ALPHABET[ord(c) % len(SAFE_ALPHABET)] for c in text)


def template_hash(template: PodTemplate) -> str:
    """The ``pod-template-hash`` of ``template``: 10 characters, stable across runs."""
    data = json.dumps(_canonical(template), sort_keys=True, separators=(",", ":")).encode()
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return _safe_encode(f"{value:010d}")


def _suffix(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in digest[:5])


def pod_name(deployment: Deployment, index: int, taken: frozenset[str] = frozenset()) -> str:
    """The name of replica ``index`` (avoiding ``taken`` suffixes, for stability on collision)."""
    prefix = f"{deployment.meta.name}-{template_hash(deployment.spec.template)}-"
    prefix = prefix[:_MAX_GENERATED_PREFIX]
    seed = f"{deployment.meta.namespace}/{prefix}{index}"
    suffix, attempt = _suffix(seed), 0
    while suffix in taken:
        attempt += 1
        suffix = _suffix(f"{seed}/{attempt}")
    return prefix + suffix


def replica_nodes(deployment: Deployment) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The nodes replicas cycle over, and warnings about the ``ambient.io/nodes`` annotation."""
    default = (deployment.spec.template.spec.node_name,)
    value = deployment.meta.annotations.get(ANNOTATION_NODES)
    if value is None:
        return default, ()
    where = f"Deployment {deployment.meta.namespace}/{deployment.meta.name}: {ANNOTATION_NODES}"
    nodes: list[str] = []
    warnings: list[str] = []
    for entry in (part.strip() for part in value.split(",")):
        problem = rules.dns1123_subdomain(entry) if entry else "empty node name"
        if problem:
            warnings.append(f"{where}: {problem}; entry ignored")
        else:
            nodes.append(entry)
    if not nodes:
        warnings.append(f"{where}: no valid node names; replicas run on {default[0]}")
        return default, tuple(warnings)
    return tuple(nodes), tuple(warnings)


def expand_deployment(deployment: Deployment) -> tuple[tuple[Pod, ...], tuple[str, ...]]:
    """The Deployment's pods, in replica order, and warnings."""
    template = deployment.spec.template
    nodes, warnings = replica_nodes(deployment)
    labels = FrozenMap({**template.meta.labels, LABEL_POD_TEMPLATE_HASH: template_hash(template)})
    pods: list[Pod] = []
    suffixes: set[str] = set()
    for index in range(deployment.spec.replicas):
        name = pod_name(deployment, index, frozenset(suffixes))
        suffixes.add(name[-5:])
        meta = ObjectMeta(name, deployment.meta.namespace, labels, template.meta.annotations)
        spec = dataclasses.replace(template.spec, node_name=nodes[index % len(nodes)])
        pods.append(Pod(meta, spec))
    return tuple(pods), warnings


def _relabel(pod: Pod, overrides: Mapping[str, str | None]) -> Pod:
    labels = dict(pod.meta.labels)
    for key, value in overrides.items():
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value
    return dataclasses.replace(pod, meta=dataclasses.replace(pod.meta, labels=FrozenMap(labels)))


def relabel_entry(entry: ScheduledPod, override: Mapping[str, str | None] | None) -> ScheduledPod:
    """``entry`` with its pod's labels overridden (``ambient label``); None: unchanged."""
    if override is None:
        return entry
    return dataclasses.replace(entry, pod=_relabel(entry.pod, override))


def relabelled(
    base: Mapping[tuple[str, str], ScheduledPod], overrides: LabelOverrides
) -> dict[tuple[str, str], ScheduledPod]:
    """Every entry of ``base`` with its override applied."""
    return {key: relabel_entry(entry, overrides.get(key)) for key, entry in base.items()}


def scheduled_pods(
    config: ConfigSet, overrides: LabelOverrides = NO_OVERRIDES
) -> tuple[tuple[ScheduledPod, ...], tuple[str, ...]]:
    """Declared pods and Deployments' pods (by namespace and name), and warnings."""
    found: dict[tuple[str, str], ScheduledPod] = {
        (p.meta.namespace, p.meta.name): ScheduledPod(p) for p in config.pods()
    }
    warnings: list[str] = []
    for deployment in config.deployments():
        pods, problems = expand_deployment(deployment)
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
    result = []
    for key in sorted(found):
        entry = found[key]
        if key in overrides:
            entry = relabel_entry(entry, overrides[key])
        result.append(entry)
    return tuple(result), tuple(warnings)
