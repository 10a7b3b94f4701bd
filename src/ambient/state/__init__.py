"""What a proxy knows about the mesh, as ztunnel's ``src/state``: read by ztunnel, the
waypoint, the xDS client and the node agent; written only by pushes.

- ``workload``: Istio's workload API (``istio.workload``) as typed values:
  ``Workload``, ``Service``, ports, waypoints. The control plane computes them
  from manifests; proxies receive them (over xDS ``istio.workload.Address`` /
  ``istio.security.Authorization``, or in-process) and never read manifests.
  Field names follow Istio's ``workload.proto``.
- ``proxy``: ``ProxyState``, one proxy's indexed view (workloads, services,
  policies), each push applied atomically, and its lookups (resolution of an
  address to an ``Upstream``, endpoints, waypoints).
"""
