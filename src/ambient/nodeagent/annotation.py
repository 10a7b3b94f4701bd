"""``ambient.istio.io/redirection: enabled`` on the pods a node's ztunnel serves, as istio-cni.

istio-cni annotates a pod once ztunnel serves it in the mesh and removes the annotation
when the pod leaves it; tools (and people) read it to know which pods are captured.
``ambient node-agent`` writes it when its ztunnel asks for a pod's redirection on
(its in-pod listeners are open) or off, through the ``pods/status`` subresource, as
istio-cni does: that is all its ClusterRole may write, and less than ``pods``.

Writes are JSON merge patches of the annotation alone (``null`` removes it), carrying
the pod's uid: a pod re-made under the same name (another uid) is refused by the API
server rather than annotated for its predecessor. A failure is logged and never undoes
the redirection: the annotation reports, it does not decide.
"""

from __future__ import annotations

import logging
from typing import Any

from ambient.kube.api import KubeClient, KubeError
from ambient.kube.kinds import POD

__all__ = ["ANNOTATION", "PodAnnotator"]

log = logging.getLogger("ambient.nodeagent")

ANNOTATION = "ambient.istio.io/redirection"


class PodAnnotator:
    """The agent's ``on_served`` hook: annotate (or un-annotate) the served pod."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self._written: dict[str, bool] = {}  # pod uid → last value written

    async def __call__(self, pod: Any, enabled: bool) -> None:  # pod: nodeagent.agent.PodNet
        if self._written.get(pod.uid) is enabled:
            return
        meta: dict[str, Any] = {"annotations": {ANNOTATION: "enabled" if enabled else None}}
        if pod.uid:
            meta["uid"] = pod.uid
        try:
            await self.client.patch(POD.path(pod.namespace, pod.name, "status"), {"metadata": meta})
        except KubeError as err:
            level = logging.DEBUG if err.code == 404 else logging.WARNING
            log.log(level, "%s/%s: cannot write %s: %s", pod.namespace, pod.name, ANNOTATION, err)
            return
        self._written[pod.uid] = enabled
        if len(self._written) > 65536:  # pods come and go: forget the oldest half
            for uid in list(self._written)[:32768]:
                del self._written[uid]
