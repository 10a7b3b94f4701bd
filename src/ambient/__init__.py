"""ambient: a sidecar-less, zero-trust service mesh implementing Istio's ambient mode.

Packages, one per component or concern, lowest layer first (dependencies go only
downwards; ``tests/unit/test_layering.py`` holds it):

- ``authz``        authorization policy semantics (pure functions)
- ``netns`` ...    primitives: network namespaces, the mesh's HTTP server/client
- ``config``       loading and validating Istio / Kubernetes / Gateway API YAML
- ``identity``     SPIFFE ids, the CAs, workload and node certificates
- ``state``        what a proxy knows: the workload API and ``ProxyState``
- ``hbone``        HBONE: HTTP/2 CONNECT in mutual TLS (sans-io core + asyncio edge)
- ``controlplane`` istiod's job: the ambient index, pushes, node-bound signing
- ``ztunnel``      the per-node L4 proxy
- ``xds``          delta ADS and the CA service over gRPC
- ``waypoint``     the per-service L7 proxy
- ``nodeagent``    istio-cni's job: network namespaces and traffic redirection
- ``runtime``      the local kubelet stand-in that runs pods' processes
- ``local``        ``ambient up``: the parts wired into one mesh
- ``cli``          the ``ambient`` command
"""

__version__ = "0.1.0"
