"""Removing a node from the mesh (``ambient node revoke``) and ending its xDS streams.

The membership file lives in the control plane's state folder; ``ambient node revoke``
writes it from another process, and the running control plane polls it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from ambient.identity.members import NodeMembers
from ambient.identity.node import NODE_CA_DIR

__all__ = [
    "REVOCATION_POLL",
    "TOKENS_DIR",
    "control_plane_root",
    "follow_revocations",
    "revoke_node",
]

log = logging.getLogger("ambient.distributed")

TOKENS_DIR = "nodes"  # <state>/nodes/join-tokens.json
REVOCATION_POLL = 0.25


def control_plane_root(state_root: Path) -> Path:
    """The control plane's state folder: ``state_root`` itself (``ambient controlplane``),
    or its ``controlplane`` folder when ``state_root`` is an ``ambient up`` mesh's."""
    nested = state_root / "controlplane"
    return nested if (nested / NODE_CA_DIR).is_dir() else state_root


def revoke_node(state_root: Path, node: str) -> bool:
    """Remove ``node`` from the mesh (``ambient node revoke``); False if it was not in it.

    A running control plane ends the node's xDS streams within :data:`REVOCATION_POLL`."""
    return NodeMembers(state_root / TOKENS_DIR).revoke(node)


async def follow_revocations(members: NodeMembers, xds: Any) -> None:
    """End the xDS streams of nodes revoked while we run (``ambient node revoke`` writes the
    membership file from another process; one ``stat`` per poll tells us)."""
    while True:
        await asyncio.sleep(REVOCATION_POLL)
        if members.changed():
            try:
                xds.recheck_nodes()
            except Exception:  # keep following; the next change checks again
                log.exception("checking the xDS streams against node membership failed")
