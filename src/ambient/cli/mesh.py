"""The local mesh's lifecycle: ``up``, ``down``, ``status``, and ``exec`` into a pod."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import click

from ambient.cli.app import (
    CONTEXT,
    call,
    fail,
    log_level_option,
    parse_duration,
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
@click.argument("config_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
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
@click.pass_context
def up(
    ctx: click.Context,
    config_dir: Path,
    state_dir: str | None,
    log_level: str,
    single_process: bool,
    cert_ttl: str | None,
    netns: bool,
) -> None:
    """Run the mesh described by CONFIG_DIR in the foreground (Ctrl-C stops it cleanly).

    The control plane and one ztunnel per node run as child processes of this one,
    which runs the pods; edits to files in CONFIG_DIR are applied while it runs.
    With --netns this process is also the node agent (namespaces, links, rules) and
    each ztunnel serves its pods inside their network namespaces.
    """
    from ambient.local.daemon import run

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
@click.option("-n", "--namespace", default="default", show_default=True)
@state_dir_option
@click.argument("target")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(
    ctx: click.Context, namespace: str, state_dir: str | None, target: str, command: tuple[str, ...]
) -> None:
    """Run COMMAND in pod TARGET (or deploy/NAME): its environment, its working folder and,
    with --netns, its network namespace; as you, not as the pod's user (an operator's tool).

    Example: ambient exec -n shop deploy/web -- curl -s http://orders:8080/
    """
    pods = [p for p in call(ctx, "GET", "/pods") if p["namespace"] == namespace]
    kind, _, name = target.rpartition("/")
    if kind in ("deploy", "deployment", "deployments"):
        matches = [p for p in pods if p["workload"] == name and p["workload_type"] == "deployment"]
    elif kind in ("", "pod", "pods", "po"):
        matches = [p for p in pods if p["name"] == name]
    else:
        fail(f"cannot exec into {target!r}: use POD or deploy/NAME")
    if not matches:
        known = ", ".join(sorted(p["name"] for p in pods)) or "none"
        fail(f"no pod {target!r} in namespace {namespace!r} (pods there: {known})")
    pod = matches[0]
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
