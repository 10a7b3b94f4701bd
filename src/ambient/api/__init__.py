"""The control plane's output: Istio's workload API (``istio.workload``) as typed values.

This is everything ztunnel and waypoints know about the mesh. The control
plane computes it from manifests; proxies receive it (in-process today, over
xDS ``istio.workload.Address`` / ``istio.security.Authorization`` later) and
never read manifests themselves. Field names follow Istio's ``workload.proto``.
"""
