"""``ambient install`` and ``ambient uninstall``: the mesh's CRDs, namespace, RBAC in a cluster.

Defines the commands only; ``cli.main`` attaches them to the root group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ambient.cli.app import CONTEXT, fail
from ambient.install.apply import (
    InstallError,
    connect,
    install,
    refuse_dev_nodes,
    render,
    uninstall,
)
from ambient.install.crds import CrdError, ensure_crds, load_crds
from ambient.install.manifests import mesh_objects
from ambient.install.workloads import DEFAULT_IMAGE, PROFILES, WorkloadOptions, workload_objects
from ambient.progress import Reporter, progress

__all__ = ["install_command", "uninstall_command"]


def _cluster_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "--crds",
        "crds_dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="AMBIENT_CRDS_DIR",
        help="Folder of the fetched CRDs (default: the cache, ~/.cache/ambient/crds; "
        "fetched with Go when missing).",
    )(f)
    f = click.option("--dry-run", is_flag=True, help="Print the objects as YAML; change nothing.")(
        f
    )
    f = click.option("--context", help="Kubeconfig context (default: its current context).")(f)
    f = click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Kubeconfig of the cluster (default: $KUBECONFIG, ~/.kube/config, in-cluster).",
    )(f)
    return f


def _counting(reporter: Reporter, total: int) -> Callable[[str], None]:
    """The install's messages (``ambient.install.apply``) on ``reporter``
    (``ambient.progress``: a live line on a terminal, nothing in scripts): each object
    applied or deleted counts towards ``total``; a wait (``waiting for N ...``) is the
    step, its bar counting the N as each is established or gone; other messages (CRDs
    established) stay."""
    done = 0
    waited, waiting = 0, 0

    def report(message: str) -> None:
        nonlocal done, waited, waiting
        if message.startswith(("applied ", "deleted ")):
            done += 1
            reporter.step(message)
            reporter.count(done, total)
        elif message.startswith("waiting for "):
            count = message.removeprefix("waiting for ").split(" ", 1)[0]
            waited, waiting = 0, int(count) if count.isdigit() else 0
            reporter.step(message)
            if waiting:
                reporter.count(0, waiting)
        elif message.startswith(("established ", "gone ")):
            waited += 1
            if waiting:
                reporter.count(waited, waiting)
        else:
            reporter.note(message)

    return report


Objects = list[dict[str, Any]]


def _objects(crds_dir: Path | None, workloads: Objects) -> tuple[Objects, Objects]:
    try:
        crds = load_crds(ensure_crds(crds_dir))
    except CrdError as err:
        fail(str(err))
    return crds, mesh_objects() + workloads


async def _run(
    action: str,
    kubeconfig: Path | None,
    context: str | None,
    crds: Objects,
    mesh: Objects,
    workloads: bool = False,
) -> None:
    client = connect(kubeconfig, context)
    try:
        with progress(f"{action}ing") as reporter:
            report = _counting(reporter, len(crds) + len(mesh))
            if action == "install":
                if workloads:
                    await refuse_dev_nodes(client)
                await install(client, crds, mesh, report)
            else:
                await uninstall(client, crds, mesh, report)
    finally:
        await client.close()


@click.command("install", context_settings=CONTEXT)
@_cluster_options
@click.option(
    "--profile",
    type=click.Choice(PROFILES),
    default="default",
    show_default=True,
    help="ambient: also the control plane Deployment and Service, the ztunnel and node-agent "
    "DaemonSets (a real cluster's nodes run them).",
)
@click.option(
    "--image",
    default=DEFAULT_IMAGE,
    show_default=True,
    help="--profile ambient: the image built from the repository's Dockerfile.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="--profile ambient: the mesh processes' log level.",
)
def install_command(
    kubeconfig: Path | None,
    context: str | None,
    dry_run: bool,
    crds_dir: Path | None,
    profile: str,
    image: str,
    log_level: str,
) -> None:
    """Install what the mesh needs in a Kubernetes cluster.

    Istio's CRDs (networking, security, telemetry) and Gateway API's standard CRDs
    from the published modules at pinned versions, the istio-system namespace, the
    istio-waypoint GatewayClass, and ServiceAccounts with least-privilege RBAC for
    the control plane (istiod), ztunnel and the node agent (istio-cni). With
    --profile ambient also the mesh's processes, as a real cluster runs them: the
    control plane's Deployment and Service, the ztunnel DaemonSet and the node-agent
    DaemonSet that chains the ambient-cni plugin. Server-side apply: running it again
    changes nothing.
    """
    if profile == "default" and (image != DEFAULT_IMAGE or log_level != "info"):
        raise click.UsageError("--image and --log-level go with --profile ambient")
    workloads = (
        workload_objects(WorkloadOptions(image=image, log_level=log_level))
        if profile == "ambient"
        else []
    )
    crds, mesh = _objects(crds_dir, workloads)
    if dry_run:
        click.echo(render(crds + mesh), nl=False)
        return
    try:
        asyncio.run(_run("install", kubeconfig, context, crds, mesh, bool(workloads)))
    except InstallError as err:
        fail(str(err))
    click.echo(f"installed: {len(crds)} CRD objects, {len(mesh)} mesh objects")


@click.command("uninstall", context_settings=CONTEXT)
@_cluster_options
def uninstall_command(
    kubeconfig: Path | None, context: str | None, dry_run: bool, crds_dir: Path | None
) -> None:
    """Remove what `ambient install` applied, with any profile (its CRDs delete every object
    of their kinds; the node agents remove the CNI plugin as their DaemonSet goes)."""
    crds, mesh = _objects(crds_dir, workload_objects())
    if dry_run:
        click.echo(render(list(reversed(mesh)) + list(reversed(crds))), nl=False)
        return
    try:
        asyncio.run(_run("uninstall", kubeconfig, context, crds, mesh))
    except InstallError as err:
        fail(str(err))
    click.echo("uninstalled")
