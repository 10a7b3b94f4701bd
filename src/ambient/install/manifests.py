"""The mesh's own objects in a cluster: namespace, GatewayClass, ServiceAccounts and RBAC.

Names follow Istio's, so that tooling and defaults agree (the CA's trusted node
account is ``istio-system/ztunnel``, as istiod's ``CA_TRUSTED_NODE_ACCOUNTS``):

- ServiceAccount ``istio-system/istiod`` — the control plane. ClusterRole
  ``ambient-istiod``: read (get/list/watch) Namespaces, Pods, Services, Nodes,
  ServiceAccounts, EndpointSlices and every kind of the Istio groups and of Gateway
  API; write the status of GatewayClasses, Gateways, HTTPRoutes and GRPCRoutes;
  create and maintain waypoints' Deployments, Services and ServiceAccounts (as
  istiod's gateway deployment controller does); create TokenReviews (the CA checks
  ztunnel tokens) and Events. Role ``ambient-istiod`` in ``istio-system``: Leases
  (leader election) and ConfigMaps (mesh configuration). No Secrets anywhere:
  the CA keeps its keys in its own files.
- ServiceAccount ``istio-system/ztunnel`` — the node proxies. Role ``ambient-ztunnel``
  in ``istio-system``: create a token for the ``ztunnel`` ServiceAccount only
  (``serviceaccounts/token`` with that resourceName), which it presents to the CA;
  nothing else (it learns the mesh over xDS). RBAC cannot say *which pod* such a
  token may be bound to, and the CA takes the node from that pod: so the
  ValidatingAdmissionPolicy ``ambient-ztunnel-token-binding`` (with its binding) lets
  the ``ztunnel`` account request tokens only bound to the pod its own credentials are
  bound to (``request.userInfo.extra`` pod-name/pod-uid) — a compromised node's
  ztunnel cannot mint a token for another node's ztunnel pod. (The kubelet's node
  authorizer gives the same guarantee for projected tokens; Istio's ztunnel uses
  those and needs no ``serviceaccounts/token`` at all.)
- ServiceAccount ``istio-system/istio-cni`` — the node agents (Istio's name for
  them). ClusterRole ``ambient-istio-cni``: get Pods and Namespaces (which pods the
  CNI plugin reports are enrolled: ``ambient.nodeagent.enrollment``), patch
  ``pods/status`` (the ``ambient.istio.io/redirection`` annotation, through the
  subresource as istio-cni: less than ``pods``); Role ``ambient-istio-cni`` in
  ``istio-system``: get the DaemonSet ``istio-cni-node`` only (on exit an agent tells
  its DaemonSet's upgrade from its deletion, and removes the plugin only for the
  latter).
- GatewayClass ``istio-waypoint`` with Istio's controllerName
  ``istio.io/mesh-controller``.

Every object carries ``app.kubernetes.io/managed-by: ambient`` so that
``uninstall`` (and a reader) can tell it from others.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CONTROL_PLANE_SA",
    "MANAGED_BY",
    "NAMESPACE",
    "NODE_AGENT_DAEMONSET",
    "NODE_AGENT_SA",
    "TOKEN_BINDING_POLICY",
    "WAYPOINT_CLASS",
    "WAYPOINT_CONTROLLER",
    "ZTUNNEL_SA",
    "mesh_objects",
]

NAMESPACE = "istio-system"
CONTROL_PLANE_SA = "istiod"
ZTUNNEL_SA = "ztunnel"
NODE_AGENT_SA = "istio-cni"
NODE_AGENT_DAEMONSET = "istio-cni-node"
WAYPOINT_CLASS = "istio-waypoint"
WAYPOINT_CONTROLLER = "istio.io/mesh-controller"
TOKEN_BINDING_POLICY = "ambient-ztunnel-token-binding"
MANAGED_BY = {"app.kubernetes.io/managed-by": "ambient", "app.kubernetes.io/part-of": "ambient"}

_READ = ["get", "list", "watch"]
_MAINTAIN = ["get", "list", "watch", "create", "update", "patch", "delete"]
_ISTIO_GROUPS = ["networking.istio.io", "security.istio.io", "telemetry.istio.io"]
_GATEWAY_GROUP = "gateway.networking.k8s.io"
_RBAC = "rbac.authorization.k8s.io/v1"


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(MANAGED_BY)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def _control_plane_rules() -> list[dict[str, Any]]:
    status = ["gatewayclasses/status", "gateways/status", "httproutes/status", "grpcroutes/status"]
    return [
        _rule([""], ["namespaces", "pods", "nodes"], _READ),
        _rule([""], ["services", "serviceaccounts"], _MAINTAIN),
        _rule(["discovery.k8s.io"], ["endpointslices"], _READ),
        _rule(["apps"], ["deployments"], _MAINTAIN),
        _rule(_ISTIO_GROUPS, ["*"], _READ),
        _rule([_GATEWAY_GROUP], ["*"], _READ),
        _rule([_GATEWAY_GROUP], status, ["get", "update", "patch"]),
        _rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
        _rule(["", "events.k8s.io"], ["events"], ["create", "update", "patch"]),
    ]


_POD_NAME = "'authentication.kubernetes.io/pod-name'"
_POD_UID = "'authentication.kubernetes.io/pod-uid'"


def _token_binding_policy() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy that binds a ztunnel's tokens to its own pod, and its
    binding (see the module docstring)."""
    user = f"system:serviceaccount:{NAMESPACE}:{ZTUNNEL_SA}"
    own_pod = (
        "variables.ref != null && has(variables.ref.kind) && variables.ref.kind == 'Pod' && "
        f"has(variables.ref.name) && variables.ref.name == variables.extra[{_POD_NAME}][0] && "
        "(!has(variables.ref.uid) || variables.ref.uid == '' || "
        f"variables.ref.uid == variables.extra[{_POD_UID}][0])"
    )
    api = "admissionregistration.k8s.io/v1"
    return [
        {
            "apiVersion": api,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": _meta(TOKEN_BINDING_POLICY),
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["serviceaccounts/token"],
                        }
                    ]
                },
                "matchConditions": [
                    {
                        "name": "ztunnel-account",
                        "expression": f"request.userInfo.username == '{user}'",
                    }
                ],
                "variables": [
                    {
                        "name": "ref",
                        "expression": "has(object.spec.boundObjectRef) ? "
                        "object.spec.boundObjectRef : null",
                    },
                    {
                        "name": "extra",
                        "expression": "has(request.userInfo.extra) ? request.userInfo.extra : {}",
                    },
                ],
                "validations": [
                    {
                        "expression": f"{_POD_NAME} in variables.extra && {_POD_UID} in "
                        "variables.extra",
                        "message": "a ztunnel must request its token with credentials bound to "
                        "its own pod",
                    },
                    {
                        "expression": own_pod,
                        "message": "a ztunnel may only request tokens bound to its own pod",
                    },
                ],
            },
        },
        {
            "apiVersion": api,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": _meta(TOKEN_BINDING_POLICY),
            "spec": {"policyName": TOKEN_BINDING_POLICY, "validationActions": ["Deny"]},
        },
    ]


def _binding(kind: str, name: str, sa: str, namespace: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": _RBAC,
        "kind": f"{kind}Binding",
        "metadata": _meta(name, namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}],
    }


def mesh_objects() -> list[dict[str, Any]]:
    """The namespace, ServiceAccounts, RBAC and GatewayClass, in the order to apply them."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(NAMESPACE)},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(CONTROL_PLANE_SA, NAMESPACE),
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(ZTUNNEL_SA, NAMESPACE)},
        {
            "apiVersion": _RBAC,
            "kind": "ClusterRole",
            "metadata": _meta("ambient-istiod"),
            "rules": _control_plane_rules(),
        },
        _binding("ClusterRole", "ambient-istiod", CONTROL_PLANE_SA),
        {
            "apiVersion": _RBAC,
            "kind": "Role",
            "metadata": _meta("ambient-istiod", NAMESPACE),
            "rules": [
                _rule(["coordination.k8s.io"], ["leases"], _MAINTAIN),
                _rule([""], ["configmaps"], _MAINTAIN),
            ],
        },
        _binding("Role", "ambient-istiod", CONTROL_PLANE_SA, NAMESPACE),
        {
            "apiVersion": _RBAC,
            "kind": "Role",
            "metadata": _meta("ambient-ztunnel", NAMESPACE),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["serviceaccounts/token"],
                    "resourceNames": [ZTUNNEL_SA],
                    "verbs": ["create"],
                }
            ],
        },
        _binding("Role", "ambient-ztunnel", ZTUNNEL_SA, NAMESPACE),
        *_token_binding_policy(),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NODE_AGENT_SA, NAMESPACE)},
        {
            "apiVersion": _RBAC,
            "kind": "ClusterRole",
            "metadata": _meta("ambient-istio-cni"),
            "rules": [
                _rule([""], ["pods", "namespaces"], ["get"]),
                _rule([""], ["pods/status"], ["patch"]),
            ],
        },
        _binding("ClusterRole", "ambient-istio-cni", NODE_AGENT_SA),
        {
            "apiVersion": _RBAC,
            "kind": "Role",
            "metadata": _meta("ambient-istio-cni", NAMESPACE),
            "rules": [
                {
                    "apiGroups": ["apps"],
                    "resources": ["daemonsets"],
                    "resourceNames": [NODE_AGENT_DAEMONSET],
                    "verbs": ["get"],
                }
            ],
        },
        _binding("Role", "ambient-istio-cni", NODE_AGENT_SA, NAMESPACE),
        {
            "apiVersion": f"{_GATEWAY_GROUP}/v1",
            "kind": "GatewayClass",
            "metadata": _meta(WAYPOINT_CLASS),
            "spec": {
                "controllerName": WAYPOINT_CONTROLLER,
                "description": "The mesh's waypoints (ambient's control plane runs them)",
            },
        },
    ]
