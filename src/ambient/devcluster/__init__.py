"""A throwaway Kubernetes control plane for tests and demos, built from Go modules.

``python -m ambient.devcluster up DIR`` (``scripts/dev-cluster up DIR``) builds etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kubectl once into a
cache (:mod:`ambient.devcluster.build`), then runs them on loopback with a throwaway
PKI (:mod:`ambient.devcluster.cluster`); ``down DIR`` stops them and removes the data.
"""

from ambient.devcluster.build import BuildError, ensure_binaries
from ambient.devcluster.cluster import DevCluster, DevClusterError, Options, down, up
from ambient.gomod import GoNotFound

__all__ = [
    "BuildError",
    "DevCluster",
    "DevClusterError",
    "GoNotFound",
    "Options",
    "down",
    "ensure_binaries",
    "up",
]
