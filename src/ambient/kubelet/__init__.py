"""This product's part of a kubelet, for the nodes of a Kubernetes cluster.

``ambient up --kubeconfig K --nodes node-1,...`` runs, per node, a ``NodeKubelet``
(``kubelet.py``): the Node's registration and heartbeat (``node.py``), its pods as
processes of the local runtime with addresses from its ``podCIDR`` (``pods.py``,
``addresses.py``, ``network.py``), their probes (``probes.py``) and status
(``podstatus.py``, ``statuswriter.py``), read from the API server's pods
(``podspec.py``).
"""
