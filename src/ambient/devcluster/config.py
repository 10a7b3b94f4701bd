"""Files a dev cluster's components read: kubeconfigs and the scheduler's configuration."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from ambient.devcluster.pki import ClientCert

__all__ = ["write_kubeconfig", "write_scheduler_config"]


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path, *, server: str, ca_cert: Path, client: ClientCert, user: str, context: str
) -> None:
    """A kubeconfig with the certificates embedded (the file stands alone), mode 0600."""
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert),
                    "client-key-data": _b64(client.key),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def write_scheduler_config(path: Path, kubeconfig: Path) -> None:
    """KubeSchedulerConfiguration: the default profile, no leader election (one replica)."""
    doc = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "leaderElection": {"leaderElect": False},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
