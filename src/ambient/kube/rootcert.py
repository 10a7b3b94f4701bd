"""The control plane's root in the cluster: ConfigMap ``istio-system/istio-ca-root-cert``.

istiod writes its CA's root into the ConfigMap ``istio-ca-root-cert`` (key
``root-cert.pem``), and Istio's ztunnel DaemonSet mounts it to check the control
plane's certificate. Here the control plane's server certificate comes from its node
PKI, so that root is what it publishes (in ``istio-system``, where its Role may write
ConfigMaps): a kubelet of ``ambient up --kubeconfig --control-plane HOST:PORT`` on
another host reads it through the API server and gives it to its ztunnels. The trust
is the API server's, as in Istio: whoever may write that ConfigMap can point ztunnels
at another control plane.
"""

from __future__ import annotations

import logging

from ambient.kube.api import KubeClient, KubeError

__all__ = ["KEY", "NAME", "NAMESPACE", "publish_root", "read_root"]

log = logging.getLogger("ambient.kube")

NAMESPACE, NAME, KEY = "istio-system", "istio-ca-root-cert", "root-cert.pem"
PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{NAME}"


async def publish_root(client: KubeClient, pem: bytes) -> None:
    """Apply the ConfigMap with ``pem`` (server-side apply; logged, never fatal)."""
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "data": {KEY: pem.decode()},
    }
    try:
        await client.apply(PATH, body)
    except KubeError as err:
        log.warning("cannot publish the control plane's root in %s/%s: %s", NAMESPACE, NAME, err)


async def read_root(client: KubeClient) -> bytes:
    """The published root; ``KubeError`` naming the ConfigMap if there is none."""
    try:
        config_map = await client.get(PATH)
    except KubeError as err:
        raise KubeError(
            f"the control plane's root is not published ({NAMESPACE}/{NAME}: {err})"
        ) from None
    pem = str((config_map.get("data") or {}).get(KEY, ""))
    if "BEGIN CERTIFICATE" not in pem:
        raise KubeError(f"{NAMESPACE}/{NAME} has no certificate under {KEY}")
    return pem.encode()
