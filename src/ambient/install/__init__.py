"""``ambient install`` / ``uninstall``: what the mesh needs in a Kubernetes cluster.

The CRDs come from the published Go modules (:mod:`ambient.install.crds`), the
mesh's own objects are built in :mod:`ambient.install.manifests`, and
:mod:`ambient.install.apply` applies or removes them with server-side apply.
"""
