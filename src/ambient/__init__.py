"""ambient: a sidecar-less, zero-trust service mesh implementing Istio's ambient mode.

Packages, one per component or concern:

- ``identity``     SPIFFE ids, the CA, workload certificates and their renewal
- ``hbone``        HBONE: HTTP/2 CONNECT in mutual TLS (sans-io core + asyncio edge)
- ``config``       loading and validating Istio / Kubernetes / Gateway API YAML
- ``authz``        authorization policy evaluation (L4 for ztunnel, L7 for waypoints)
- ``controlplane`` istiod's job: config store, ambient index, xDS, CA service
- ``ztunnel``      the per-node L4 proxy
- ``waypoint``     the per-service L7 proxy
- ``nodeagent``    istio-cni's job: network namespaces and traffic redirection
- ``runtime``      the local kubelet stand-in that runs pods' processes
- ``cli``          the ``ambient`` command
"""

__version__ = "0.1.0"
