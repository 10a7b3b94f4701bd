"""``ambient node revoke NODE`` on a control plane's state folder (standalone or ``ambient up``'s)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ambient.cli.main import cli
from ambient.identity.members import NodeMembers
from ambient.identity.node import NodeAuthority
from ambient.identity.nodecreds import generate_node_key_and_csr


@pytest.mark.parametrize("layout", ["controlplane", "up"])
def test_revoke_removes_a_member_once(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "state"
    plane = root / "controlplane" if layout == "up" else root
    authority = NodeAuthority.load_or_create(plane)
    members = NodeMembers(plane / "nodes")
    for node in ("node-1", "node-2"):
        members.admit(node, authority.sign_node_csr(node, generate_node_key_and_csr()[1]))
    runner = CliRunner()
    revoked = runner.invoke(cli, ["node", "revoke", "node-1", "--state-dir", str(root)])
    assert revoked.exit_code == 0, revoked.output
    assert "node node-1 revoked" in revoked.output
    assert members.members() == {"node-2": 1}
    again = runner.invoke(cli, ["node", "revoke", "node-1", "--state-dir", str(root)])
    assert again.exit_code == 1
    assert "node node-1 is not in the mesh" in again.output
    bad = runner.invoke(cli, ["node", "revoke", "Node_1", "--state-dir", str(root)])
    assert bad.exit_code == 1 and "error:" in bad.output
