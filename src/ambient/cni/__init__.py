"""The chained CNI plugin (``ambient-cni``) and its installation into a node's CNI configuration.

- ``plugin``: the executable a container runtime calls on pod add/delete; standard
  library only, so that the very same file runs with the node's ``python3``.
- ``install``: copies the plugin into the CNI binary folder and chains its entry
  into the node's primary network configuration, as istio-cni's install-cni does.
"""
