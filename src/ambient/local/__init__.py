"""The local mesh: what ``ambient up`` runs on one host, and how the CLI talks to it.

``mesh.LocalMesh`` wires the control plane, one ztunnel per node and the local
runtime together in one process; ``api`` serves the control API the other
``ambient`` commands use, on a Unix socket found through the state folder.
"""
