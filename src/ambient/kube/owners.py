"""A cluster pod's workload: the name and type its controller owner reference implies.

Kubernetes records who made a pod only in ``metadata.ownerReferences`` (the entry
with ``controller: true``); the Deployment or CronJob above a ReplicaSet or Job is
found by name, without reading the ReplicaSet or Job. Istio's heuristic (its
``pkg/kube`` deploy metadata of a pod), followed here:

- Only a pod whose name was generated (``metadata.generateName``) is looked at: a
  pod named by hand, or by a StatefulSet (``web-0``: a stable identity of its own),
  keeps its own name.
- A ReplicaSet owner whose name ends with ``-<pod-template-hash>`` (the pod's
  ``pod-template-hash`` label): the Deployment, named without that suffix.
- A Job owner whose name ends with ``-<8 to 10 digits>`` (the scheduled time a
  CronJob appends): the CronJob, named without it; any other Job: the Job.
- Any other controller (DaemonSet, a bare ReplicaSet, ReplicationController...): its
  own name, with workload type ``pod`` (the workload API has only deployment,
  cronjob, job and pod, as Istio's ambient index maps them).
- No controller owner: the pod's own name, type ``pod``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["LABEL_POD_TEMPLATE_HASH", "controller_of", "workload_of"]

LABEL_POD_TEMPLATE_HASH = "pod-template-hash"
_CRONJOB_JOB = re.compile(r"(.+)-\d{8,10}")


def controller_of(meta: Mapping[str, Any]) -> dict[str, str] | None:
    """The ``kind`` and ``name`` of the controller owner of a generated pod, else None."""
    if not meta.get("generateName"):
        return None
    for ref in meta.get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            kind, name = ref.get("kind"), ref.get("name")
            if isinstance(kind, str) and isinstance(name, str) and name:
                return {"kind": kind, "name": name}
            return None
    return None


def workload_of(
    name: str, labels: Mapping[str, str], controller: Mapping[str, str] | None
) -> tuple[str, str]:
    """``(workload name, workload type)`` of the pod ``name`` (see the module docstring)."""
    if controller is None:
        return name, "pod"
    kind, owner = controller["kind"], controller["name"]
    template_hash = labels.get(LABEL_POD_TEMPLATE_HASH, "")
    if kind == "ReplicaSet" and template_hash and owner.endswith(f"-{template_hash}"):
        return owner[: -len(template_hash) - 1], "deployment"
    if kind == "Job":
        match = _CRONJOB_JOB.fullmatch(owner)
        return (match.group(1), "cronjob") if match else (owner, "job")
    return owner, "pod"
