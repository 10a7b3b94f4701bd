"""The local mesh's lifecycle: ``up``, ``down``, ``status``, and ``exec`` into a pod."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from ambient.cli.app import (
    CONTEXT,
    call,
    cluster_options,
    fail,
    log_level_option,
    parse_duration,
    path_option,
    state,
    state_dir_option,
    target,
    target_options,
)
from ambient.cli.client import ApiError, MeshClient
from ambient.cli.output import print_json, print_table
from ambient.local.statedir import MeshNotRunning

__all__ = ["down", "exec_", "status", "up"]


@click.command(context_settings=CONTEXT)
@click.argument(
    "config_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=False
)
@state_dir_option
@log_level_option
@click.option(
    "--single-process",
    is_flag=True,
    help="Run the control plane and the ztunnels inside this process "
    "(default: each as its own process).",
)
@click.option(
    "--cert-ttl",
    default=None,
    metavar="DURATION",
    help="Lifetime of workload certificates, e.g. 30s or 1h [default: 24h]; renewed at half-life.",
)
@click.option(
    "--netns",
    is_flag=True,
    help="Linux, root: a network namespace per node and pod, traffic captured transparently "
    "(this process is the node agent; each ztunnel serves its pods in-pod).",
)
@cluster_options("Run nodes of this Kubernetes cluster (with --nodes) instead of a folder's mesh.")
@click.option(
    "--nodes",
    default=None,
    metavar="NAME,...",
    help="With --kubeconfig: the nodes this host runs (their kubelets and ztunnels).",
)
@click.option(
    "--control-plane",
    "control_plane",
    default=None,
    metavar="HOST:PORT",
    help="With --kubeconfig: the control plane's certificate service on another host "
    "(its xDS on the same host, port 15010); default: run one here.",
)
@click.option(
    "--node-ip",
    default=None,
    help="With --kubeconfig: this host's address (the Nodes' InternalIP, where the control "
    "plane listens) [default: the address the API server is reached from].",
)
@path_option(
    "--ca-root",
    exists=True,
    help="With --control-plane: the control plane's root certificate, if it does not "
    "publish it (ConfigMap istio-system/istio-ca-root-cert).",
)
@click.pass_context
def up(
    ctx: click.Context,
    config_dir: Path | None,
    state_dir: str | None,
    log_level: str,
    single_process: bool,
    cert_ttl: str | None,
    netns: bool,
    kubeconfig: Path | None,
    kube_context: str | None,
    nodes: str | None,
    control_plane: str | None,
    node_ip: str | None,
    ca_root: Path | None,
) -> None:
    """Run the mesh described by CONFIG_DIR in the foreground (Ctrl-C stops it cleanly).

    The control plane and one ztunnel per node run as child processes of this one,
    which runs the pods; edits to files in CONFIG_DIR are applied while it runs.
    With --netns this process is also the node agent (namespaces, links, rules) and
    each ztunnel serves its pods inside their network namespaces.

    On a Kubernetes cluster (--kubeconfig K --nodes node-1,node-2): this host's part
    of the cluster — the control plane (unless --control-plane names one elsewhere)
    and, per node, this product's part of a kubelet (the Node, its pods as processes,
    their status) with the node's ztunnel as one of its pods.
    """
    from ambient.local.daemon import run

    root = ctx.find_root().meta
    if kubeconfig is None and root.get("kubeconfig"):  # ambient --kubeconfig K up ...
        kubeconfig = Path(root["kubeconfig"])
    kube_context = kube_context or root.get("kube_context")
    if kubeconfig is not None or kube_context is not None or nodes is not None:
        _up_cluster(
            ctx, config_dir, single_process, cert_ttl, netns, kubeconfig, kube_context,
            nodes, control_plane, node_ip, ca_root, log_level,
        )  # fmt: skip
    if control_plane or node_ip or ca_root:
        raise click.UsageError("--control-plane, --node-ip and --ca-root go with --kubeconfig")
    if config_dir is None:
        raise click.UsageError("give CONFIG_DIR (a folder of YAML), or --kubeconfig K --nodes ...")
    if netns:
        from ambient.netns import missing_capability

        problem = missing_capability()
        if problem is not None:
            fail(problem)
    ttl = parse_duration(cert_ttl).total_seconds() if cert_ttl else None
    sys.exit(
        run(
            config_dir,
            state(ctx),
            log_level,
            single_process=single_process,
            cert_ttl=ttl,
            netns=netns,
        )
    )


def _up_cluster(
    ctx: click.Context,
    config_dir: Path | None,
    single_process: bool,
    cert_ttl: str | None,
    netns: bool,
    kubeconfig: Path | None,
    kube_context: str | None,
    nodes: str | None,
    control_plane: str | None,
    node_ip: str | None,
    ca_root: Path | None,
    log_level: str,
) -> None:
    """``ambient up --kubeconfig K --nodes ...`` (see ``ambient.local.clusternodes``)."""
    from ambient.kube.api import ClusterTarget
    from ambient.local.clusternodes import ClusterNodesOptions, run_cluster_nodes

    if config_dir is not None:
        raise click.UsageError("give CONFIG_DIR or --kubeconfig, not both")
    if single_process or cert_ttl:
        raise click.UsageError("--single-process and --cert-ttl go with CONFIG_DIR")
    names = tuple(n.strip() for n in (nodes or "").split(",") if n.strip())
    if not names:
        raise click.UsageError(
            "--kubeconfig needs --nodes NAME[,NAME...]: the nodes this host runs"
        )
    from ambient.config import rules

    for name in names:
        if rules.dns1123_subdomain(name):
            raise click.BadParameter(str(rules.dns1123_subdomain(name)), param_hint="--nodes")
    if len(set(names)) != len(names):
        raise click.BadParameter("a node is named twice", param_hint="--nodes")
    if control_plane is not None:
        host, _, port = control_plane.rpartition(":")
        if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise click.BadParameter(
                f"{control_plane!r}: expected HOST:PORT", param_hint="--control-plane"
            )
    if netns:
        from ambient.netns import missing_capability

        problem = missing_capability()
        if problem is not None:
            fail(problem)
    options = ClusterNodesOptions(
        nodes=names,
        control_plane=control_plane,
        node_ip=node_ip,
        ca_root=ca_root,
        netns=netns,
        log_level=log_level,
        base_dir=Path.cwd(),
    )
    sys.exit(run_cluster_nodes(ClusterTarget(kubeconfig, kube_context), state(ctx), options))


@click.command(context_settings=CONTEXT)
@state_dir_option
@click.pass_context
def down(ctx: click.Context, state_dir: str | None) -> None:
    """Stop the mesh of this state folder if it runs, and remove every network namespace,
    link and rule its --netns mode made (also after a crash)."""
    from ambient.local.down import down as take_down

    for line in take_down(state(ctx)):
        print(line)


@click.command(context_settings=CONTEXT)
@target_options
@click.option(
    "--wait",
    "wait",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Wait up to SECONDS until every component is ready; exit 1 if not.",
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def status(ctx: click.Context, state_dir: str | None, wait: float | None, output: str) -> None:
    """Show whether the control plane, every ztunnel and every pod are ready.

    On a cluster: the control plane's readiness and what it watches (from its heartbeat)."""
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        cluster.status(cluster_target, wait, output)
        return
    deadline = time.monotonic() + (wait or 0)
    where = state(ctx)
    while True:
        try:
            result = MeshClient(where, timeout=5).get("/status")
        except (MeshNotRunning, ApiError) as exc:
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            fail(str(exc))
        if result["ready"] or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if output == "json":
        print_json(result)
    else:
        rows = [
            (c["name"], "Ready" if c["ready"] else "NotReady", c["detail"])
            for c in result["components"]
        ]
        print_table(["COMPONENT", "STATUS", "DETAIL"], rows)
        for warning in result.get("warnings", ()):
            click.secho(f"WARNING: {warning}", fg="red", bold=True, err=True)
    if wait is not None and not result["ready"]:
        fail(f"not ready after {wait:g}s")


@click.command("exec", context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.option("-n", "--namespace", default=None, help="The pod's namespace [default: default].")
@target_options
@click.argument("target_name", metavar="TARGET")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(
    ctx: click.Context,
    namespace: str | None,
    state_dir: str | None,
    target_name: str,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND in pod TARGET (or deploy/NAME): its environment, its working folder and,
    with --netns, its network namespace; as you, not as the pod's user (an operator's tool).

    Example: ambient exec -n shop deploy/web -- curl -s http://orders:8080/

    On a cluster (--kubeconfig), the pod's node must run on this host (`ambient up
    --kubeconfig K --nodes ...`): its kubelet says how the pod runs.
    """
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        namespace = namespace or cluster.context_namespace(cluster_target)
        _exec_as(cluster.exec_info(cluster_target, namespace, target_name), command)
    namespace = namespace or "default"
    pods = [p for p in call(ctx, "GET", "/pods") if p["namespace"] == namespace]
    kind, _, name = target_name.rpartition("/")
    if kind in ("deploy", "deployment", "deployments"):
        matches = [p for p in pods if p["workload"] == name and p["workload_type"] == "deployment"]
    elif kind in ("", "pod", "pods", "po"):
        matches = [p for p in pods if p["name"] == name]
    else:
        fail(f"cannot exec into {target_name!r}: use POD or deploy/NAME")
    if not matches:
        known = ", ".join(sorted(p["name"] for p in pods)) or "none"
        fail(f"no pod {target_name!r} in namespace {namespace!r} (pods there: {known})")
    _exec_as(matches[0], command)


def _exec_as(pod: dict[str, Any], command: tuple[str, ...]) -> NoReturn:
    """Replace this process by ``command`` with the pod's environment, folder and netns."""
    if pod.get("error") and not pod.get("env"):
        fail(f"cannot run as pod {pod['namespace']}/{pod['name']}: {pod['error']}")
    env = dict(pod["env"])
    if pod.get("netns"):  # --netns: run inside the pod's network namespace
        command = ("ip", "netns", "exec", pod["netns"], *command)
    try:
        os.chdir(pod["cwd"])
        os.execvpe(command[0], list(command), env)
    except FileNotFoundError:
        fail(f"command not found: {command[0]}", 127)
    except OSError as exc:
        fail(f"cannot run {shlex.join(command)}: {exc}", 126)
