"""The mesh's processes as a real cluster runs them: ``ambient install --profile ambient``.

Istio's ambient profile, with this project's image (one image, the ``ambient`` command;
its ``Dockerfile`` is at the top of the repository):

- Deployment and Service ``istio-system/istiod``: ``ambient controlplane`` with the
  in-cluster account ``istiod``; CA on 15012 and xDS on 15010 (the Service's ports,
  Istio's names ``https-dns`` and ``grpc-xds``). Readiness is the CA port: it opens only
  once every watched kind has been listed. *Decisions:* one replica with the
  ``Recreate`` strategy (there is no leader election: two control planes would write
  the same objects); its CA's keys in a PersistentVolumeClaim (``istiod-state``, the
  cluster's default storage class) rather than a Secret — ``ambient install``'s RBAC
  grants no Secrets, and only keys and logs live outside the API server; a restarted
  control plane keeps its roots, so running ztunnels keep trusting it. It runs as
  user 1337 (Istio's), read-only root filesystem, no capabilities.
- DaemonSet ``istio-system/ztunnel``: ``ambient ztunnel`` on every node, in its own pod
  network as Istio's (not the host's), with the node agent's socket
  (``--node-agent-socket``, in-pod mode) and the host's ``/var/run/netns``
  (``HostToContainer``: namespaces made after it started appear), authenticated with
  a projected service-account token (audience ``istio-ca``, 12 h, bound to its pod by
  the kubelet: Istio's ``istio-token``) and checking the control plane against the
  ConfigMap ``istio-ca-root-cert`` (which the control plane publishes, as istiod).
  Capabilities as Istio's ztunnel: ``NET_ADMIN``, ``SYS_ADMIN``, ``NET_RAW``.
- DaemonSet ``istio-system/istio-cni-node``: ``ambient node-agent --install-cni`` on the
  host network with the host's CNI folders mounted under ``/host``; it installs the
  ``ambient-cni`` plugin once it serves and keeps it chained, and removes it only when
  this DaemonSet is deleted (``--owner-daemonset``). *Decision:* ``privileged`` (istio-cni
  offers it too): the agent writes ``nft`` rules and routes inside pods' namespaces
  through ``ip netns exec``, which mounts (``/sys``), which a runtime's default
  AppArmor profile refuses to an unprivileged container.

The containers run the commands the dev nodes run (``ambient up --kubeconfig``), with the
cluster's paths: :func:`controlplane_args`, :func:`ztunnel_args`,
:func:`node_agent_args`. Every pod of the mesh is labelled
``istio.io/dataplane-mode: none`` and its namespace is excluded from the plugin: the
mesh never captures itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ambient import __version__
from ambient.cni.plugin import DEFAULT_RUN_DIR
from ambient.install.manifests import (
    CONTROL_PLANE_SA,
    MANAGED_BY,
    NAMESPACE,
    NODE_AGENT_DAEMONSET,
    NODE_AGENT_SA,
    ZTUNNEL_SA,
)

__all__ = [
    "CA_PORT",
    "CONTROL_PLANE",
    "DEFAULT_IMAGE",
    "NODE_AGENT",
    "PROFILES",
    "XDS_PORT",
    "ZTUNNEL",
    "Paths",
    "WorkloadOptions",
    "controlplane_args",
    "node_agent_args",
    "workload_objects",
    "ztunnel_args",
]

PROFILES = ("default", "ambient")
"""``default``: CRDs, namespace, RBAC, GatewayClass; ``ambient``: also the workloads."""

DEFAULT_IMAGE = f"ambient:{__version__}"
CONTROL_PLANE, ZTUNNEL, NODE_AGENT = "istiod", "ztunnel", NODE_AGENT_DAEMONSET
CA_PORT, XDS_PORT = 15012, 15010
ADMIN_PORT, METRICS_PORT, READINESS_PORT = 15000, 15020, 15021
CONTROL_PLANE_STATE = "istiod-state"
ROOT_CONFIGMAP = "istio-ca-root-cert"
TOKEN_AUDIENCE = "istio-ca"
TOKEN_SECONDS = 43200
APPS = "apps/v1"
NOT_CAPTURED = {"istio.io/dataplane-mode": "none", "sidecar.istio.io/inject": "false"}


@dataclass(frozen=True)
class Paths:
    """Where each container finds its files (the mounts below)."""

    state_dir: str = "/var/lib/ambient"
    token_file: str = "/var/run/secrets/tokens/istio-token"
    ca_root: str = "/var/run/secrets/istio/root-cert.pem"
    ztunnel_socket: str = "/var/run/ztunnel/nodeagent.sock"
    netns_dir: str = "/var/run/netns"
    cni_run_dir: str = DEFAULT_RUN_DIR
    cni_bin_dir: str = "/host/opt/cni/bin"
    cni_conf_dir: str = "/host/etc/cni/net.d"
    host_python: str = "/usr/bin/python3"


@dataclass(frozen=True)
class WorkloadOptions:
    """What ``ambient install --profile ambient`` may change."""

    image: str = DEFAULT_IMAGE
    log_level: str = "info"
    pull_policy: str = "IfNotPresent"


def controlplane_args(paths: Paths, log_level: str, image: str) -> list[str]:
    """``ambient controlplane`` in the cluster: the in-cluster account, every address; its
    waypoints' Deployments run the same image."""
    return [
        "controlplane",
        "--waypoint-image",
        image,
        "--state-dir",
        paths.state_dir,
        "--listen",
        f"0.0.0.0:{CA_PORT}",
        "--xds-listen",
        f"0.0.0.0:{XDS_PORT}",
        "--log-level",
        log_level,
    ]


def ztunnel_args(paths: Paths, log_level: str) -> list[str]:
    """``ambient ztunnel`` of a node (``$(VAR)`` from the downward API, as kubelets expand)."""
    service = f"{CONTROL_PLANE}.{NAMESPACE}.svc"
    return [
        "ztunnel",
        "--node",
        "$(NODE_NAME)",
        "--node-ip",
        "$(POD_IP)",
        "--control-plane",
        f"{service}:{CA_PORT}",
        "--xds",
        f"{service}:{XDS_PORT}",
        "--token-file",
        paths.token_file,
        "--ca-root",
        paths.ca_root,
        "--log-level",
        log_level,
        "--node-agent-socket",
        paths.ztunnel_socket,
    ]


def node_agent_args(paths: Paths, log_level: str) -> list[str]:
    """``ambient node-agent --install-cni`` of a node."""
    return [
        "node-agent",
        "--node",
        "$(NODE_NAME)",
        "--cni-run-dir",
        paths.cni_run_dir,
        "--ztunnel-socket",
        paths.ztunnel_socket,
        "--netns-dir",
        paths.netns_dir,
        "--install-cni",
        "--cni-bin-dir",
        paths.cni_bin_dir,
        "--cni-conf-dir",
        paths.cni_conf_dir,
        "--plugin-python",
        paths.host_python,
        "--exclude-namespace",
        "kube-system",
        "--exclude-namespace",
        NAMESPACE,
        "--owner-daemonset",
        f"{NAMESPACE}/{NODE_AGENT}",
        "--log-level",
        log_level,
    ]


def _meta(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": {**MANAGED_BY, **(labels or {})}}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


_POD_ENV = [
    _field_env("NODE_NAME", "spec.nodeName"),
    _field_env("POD_IP", "status.podIP"),
    _field_env("POD_NAME", "metadata.name"),
    _field_env("POD_NAMESPACE", "metadata.namespace"),
    _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
]


def _host_path(name: str, path: str, kind: str = "DirectoryOrCreate") -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path, "type": kind}}


def _mount(name: str, path: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "mountPath": path, **extra}


def _container(name: str, args: list[str], options: WorkloadOptions) -> dict[str, Any]:
    return {
        "name": name,
        "image": options.image,
        "imagePullPolicy": options.pull_policy,
        "command": ["ambient"],
        "args": args,
        "env": list(_POD_ENV),
    }


def _node_pod_spec(account: str) -> dict[str, Any]:
    """What every node DaemonSet's pods share: every node, before anything else."""
    return {
        "serviceAccountName": account,
        "priorityClassName": "system-node-critical",
        "tolerations": [{"operator": "Exists"}],
    }


def _daemonset(name: str, labels: dict[str, str], pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": APPS,
        "kind": "DaemonSet",
        "metadata": _meta(name, labels),
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {"metadata": {"labels": {**labels, **NOT_CAPTURED}}, "spec": pod},
        },
    }


def _control_plane(options: WorkloadOptions, paths: Paths) -> list[dict[str, Any]]:
    labels = {"app": CONTROL_PLANE, "istio": "pilot"}
    container = _container(
        "discovery", controlplane_args(paths, options.log_level, options.image), options
    )
    container |= {
        "ports": [
            {"name": "grpc-xds", "containerPort": XDS_PORT, "protocol": "TCP"},
            {"name": "https-dns", "containerPort": CA_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"tcpSocket": {"port": CA_PORT}, "periodSeconds": 2},
        "volumeMounts": [_mount("state", paths.state_dir), _mount("tmp", "/tmp")],
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod = {
        "serviceAccountName": CONTROL_PLANE_SA,
        "securityContext": {"runAsUser": 1337, "runAsGroup": 1337, "fsGroup": 1337},
        "containers": [container],
        "volumes": [
            {"name": "state", "persistentVolumeClaim": {"claimName": CONTROL_PLANE_STATE}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta(CONTROL_PLANE_STATE, {"app": CONTROL_PLANE}),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        {
            "apiVersion": APPS,
            "kind": "Deployment",
            "metadata": _meta(CONTROL_PLANE, labels),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": {**labels, **NOT_CAPTURED}}, "spec": pod},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(CONTROL_PLANE, labels),
            "spec": {
                "selector": labels,
                "ports": [
                    {"name": "grpc-xds", "port": XDS_PORT, "targetPort": XDS_PORT},
                    {"name": "https-dns", "port": CA_PORT, "targetPort": CA_PORT},
                ],
            },
        },
    ]


def _ztunnel(options: WorkloadOptions, paths: Paths) -> dict[str, Any]:
    labels = {"app": ZTUNNEL}
    container = _container("istio-proxy", ztunnel_args(paths, options.log_level), options)
    token_dir, root_dir = paths.token_file.rpartition("/")[0], paths.ca_root.rpartition("/")[0]
    container |= {
        "ports": [
            {"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
            {"name": "ztunnel-stats", "containerPort": METRICS_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": READINESS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": READINESS_PORT},
            "periodSeconds": 2,
        },
        "volumeMounts": [
            _mount("istio-token", token_dir),
            _mount("istiod-ca-cert", root_dir),
            _mount("cni-ztunnel-sock-dir", paths.ztunnel_socket.rpartition("/")[0]),
            _mount("netns", paths.netns_dir, mountPropagation="HostToContainer"),
            _mount("tmp", "/tmp"),
        ],
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "SYS_ADMIN", "NET_RAW"]},
        },
    }
    token = {
        "serviceAccountToken": {
            "audience": TOKEN_AUDIENCE,
            "expirationSeconds": TOKEN_SECONDS,
            "path": paths.token_file.rpartition("/")[2],
        }
    }
    pod = _node_pod_spec(ZTUNNEL_SA) | {
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": [
            {"name": "istio-token", "projected": {"sources": [token]}},
            {"name": "istiod-ca-cert", "configMap": {"name": ROOT_CONFIGMAP}},
            _host_path("cni-ztunnel-sock-dir", paths.ztunnel_socket.rpartition("/")[0]),
            _host_path("netns", "/var/run/netns"),
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    return _daemonset(ZTUNNEL, labels, pod)


def _node_agent(options: WorkloadOptions, paths: Paths) -> dict[str, Any]:
    labels = {"k8s-app": NODE_AGENT}
    container = _container("install-cni", node_agent_args(paths, options.log_level), options)
    socket = f"{paths.cni_run_dir}/pluginevent.sock"
    container |= {
        # The agent chains the plugin only once its socket serves.
        "readinessProbe": {"exec": {"command": ["test", "-S", socket]}, "periodSeconds": 2},
        "volumeMounts": [
            _mount("cni-bin-dir", paths.cni_bin_dir),
            _mount("cni-net-dir", paths.cni_conf_dir),
            _mount("cni-run-dir", paths.cni_run_dir),
            _mount("cni-ztunnel-sock-dir", paths.ztunnel_socket.rpartition("/")[0]),
            _mount("netns", paths.netns_dir, mountPropagation="HostToContainer"),
        ],
        "securityContext": {"privileged": True, "runAsUser": 0, "runAsGroup": 0},
    }
    pod = _node_pod_spec(NODE_AGENT_SA) | {
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "terminationGracePeriodSeconds": 5,
        "containers": [container],
        "volumes": [
            _host_path("cni-bin-dir", "/opt/cni/bin", "Directory"),
            _host_path("cni-net-dir", "/etc/cni/net.d", "Directory"),
            _host_path("cni-run-dir", paths.cni_run_dir),
            _host_path("cni-ztunnel-sock-dir", paths.ztunnel_socket.rpartition("/")[0]),
            _host_path("netns", "/var/run/netns"),
        ],
    }
    return _daemonset(NODE_AGENT, labels, pod)


def workload_objects(
    options: WorkloadOptions | None = None, paths: Paths | None = None
) -> list[dict[str, Any]]:
    """The control plane's claim, Deployment and Service, then the two node DaemonSets."""
    options = options or WorkloadOptions()
    paths = paths or Paths()
    return [*_control_plane(options, paths), _ztunnel(options, paths), _node_agent(options, paths)]
