"""``ambient node``: join tokens, joining a node to a distributed mesh, and revoking one.

``ambient node token create NODE`` (on the control plane's state folder) prints a
one-time token; ``ambient node join`` on the node exchanges it for the node's
credentials (see ``cli.distributed`` for the services that use them);
``ambient node revoke NODE`` takes a node out of the mesh
(``ambient.identity.members``).
"""

from __future__ import annotations

from pathlib import Path

import click

from ambient.cli.app import CONTEXT, fail, parse_duration, state, state_dir_option

__all__ = ["node"]


@click.group(context_settings=CONTEXT)
def node() -> None:
    """Add nodes to a distributed mesh (join tokens, joining) and remove them (revoke)."""


@node.group(context_settings=CONTEXT)
def token() -> None:
    """One-time join tokens (kept in the control plane's state folder)."""


@token.command("create", context_settings=CONTEXT)
@click.argument("node_name", metavar="NODE")
@click.option("--ttl", default="1h", show_default=True, help="How long the token is valid.")
@state_dir_option
@click.pass_context
def token_create(ctx: click.Context, node_name: str, ttl: str, state_dir: str | None) -> None:
    """Print a new token that lets NODE join once (the control plane may be running)."""
    from ambient.identity.certs import CertificateError
    from ambient.identity.jointokens import TokenStoreError
    from ambient.local.distributed import create_token

    try:
        click.echo(create_token(state(ctx).root, node_name, parse_duration(ttl)))
    except (ValueError, CertificateError, TokenStoreError, OSError) as exc:
        fail(str(exc))


@node.command("join", context_settings=CONTEXT)
@click.option(
    "--control-plane", "address", required=True, help="HOST:PORT of the join port (15013)."
)
@click.option("--token", "token_value", required=True, help="From `ambient node token create`.")
@click.option("--node", "node_name", required=True, help="This node's name.")
@click.option(
    "--ca-root",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The control plane's node CA root (its STATE/node-ca/root-cert.pem).",
)
@state_dir_option
@click.pass_context
def node_join(
    ctx: click.Context,
    address: str,
    token_value: str,
    node_name: str,
    ca_root: Path,
    state_dir: str | None,
) -> None:
    """Join the mesh as NODE: store its credentials in this node's state folder."""
    from ambient.identity.certs import CertificateError
    from ambient.local.distributed import DistributedError, join
    from ambient.logconfig import setup_logging

    setup_logging("error")  # a refusal is reported once, below, not also as a log warning
    try:
        where = join(address, token_value, node_name, ca_root, state(ctx).root)
    except (ValueError, CertificateError, DistributedError) as exc:
        fail(str(exc))
    click.echo(f"node {node_name} joined; credentials in {where}")


@node.command("revoke", context_settings=CONTEXT)
@click.argument("node_name", metavar="NODE")
@state_dir_option
@click.pass_context
def node_revoke(ctx: click.Context, node_name: str, state_dir: str | None) -> None:
    """Take NODE out of the mesh: its node certificates are refused from now on and a
    running control plane ends its xDS stream at once. A new token and join bring it back.

    The state folder is the control plane's (``ambient controlplane``) or an
    ``ambient up`` mesh's."""
    from ambient.identity.jointokens import TokenStoreError
    from ambient.local.revocation import control_plane_root, revoke_node

    try:
        revoked = revoke_node(control_plane_root(state(ctx).root), node_name)
    except (ValueError, TokenStoreError, OSError) as exc:
        fail(str(exc))
    if not revoked:
        fail(f"node {node_name} is not in the mesh (it never joined, or was already revoked)")
    click.echo(
        f"node {node_name} revoked: its certificates are refused and its xDS stream ends; "
        f"`ambient node token create {node_name}` and a new join bring it back"
    )
