"""kubectl's verbs on the running mesh: ``apply``, ``delete``, ``label`` (``get``: ``cli.get``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import yaml

from ambient.cli.app import CONTEXT, call, fail, target, target_options
from ambient.local.systempods import SYSTEM_NAMESPACE

__all__ = ["apply", "delete", "label"]


def _read_manifest(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(), path
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")


def _without_owned_pods(ctx: click.Context, text: str) -> str:
    """``text`` without the Pods a Deployment owns (``ambient get pods -o yaml`` prints
    them with ``ownerReferences``), the mesh's own pods and DaemonSet (``ambient-system``)
    and its Nodes: each running one is ``unchanged``, as kubectl says of an
    unchanged object; one that no longer runs is refused (its Deployment, or ``ambient
    up``, makes them). ``text`` is
    returned as is when it holds none."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError:
        return text  # the mesh reports where
    items = [
        i
        for d in documents
        for i in (d.get("items") or [] if d.get("kind") == "List" else [d])
        if isinstance(d, dict)
    ]
    owned = [
        i
        for i in items
        if isinstance(i, dict)
        and i.get("kind") in ("Pod", "DaemonSet", "Node")
        and (
            i.get("kind") == "Node"
            or (i.get("metadata") or {}).get("namespace") == SYSTEM_NAMESPACE
            or any(
                o.get("kind") == "Deployment"
                for o in (i.get("metadata") or {}).get("ownerReferences") or []
            )
        )
    ]
    if not owned:
        return text
    pods = call(ctx, "GET", "/pods")
    if any(p["metadata"].get("namespace") == SYSTEM_NAMESPACE for p in owned):
        pods += call(ctx, "GET", "/system-pods")
    running = {("Pod", p["namespace"], p["name"]) for p in pods}
    running |= {("DaemonSet", p["namespace"], p["workload"]) for p in pods
                if p.get("workload_type") == "daemonset"}  # fmt: skip
    if any(i["kind"] == "Node" for i in owned):
        running |= {("Node", "", n["name"]) for n in call(ctx, "GET", "/nodes")}
    for pod in owned:
        meta = pod["metadata"]
        key = (meta.get("namespace", "" if pod["kind"] == "Node" else "default"), meta.get("name"))
        if pod["kind"] == "Node" and (pod["kind"], *key) not in running:
            fail(f"node {key[1]} does not run: ambient up makes its nodes, they are not declared")
        if (pod["kind"], *key) not in running:
            if key[0] == SYSTEM_NAMESPACE:
                fail(
                    f"pod {key[0]}/{key[1]}: {SYSTEM_NAMESPACE} holds the mesh's own processes, "
                    "which ambient up starts; they are not declared"
                )
            owner = next(o for o in meta["ownerReferences"] if o.get("kind") == "Deployment")
            fail(
                f"pod {key[0]}/{key[1]} is made by deployment {owner.get('name')}: change the deployment"
            )
        word = {"DaemonSet": "daemonset.apps", "Node": "node"}.get(pod["kind"], "pod")
        click.echo(f"{word}/{key[1]} unchanged")
    rest = [i for i in items if i not in owned]
    return yaml.safe_dump_all(rest, sort_keys=False) if rest else ""


@click.command(context_settings=CONTEXT)
@click.option(
    "-f", "--filename", "files", multiple=True, required=True, help="YAML file, or - for stdin."
)
@click.option(
    "-n",
    "--namespace",
    default=None,
    help="A cluster: for objects that name none (default: the context's).",
)
@target_options
@click.pass_context
def apply(
    ctx: click.Context, files: tuple[str, ...], namespace: str | None, state_dir: str | None
) -> None:
    """Create or update objects in the running mesh (a cluster: server-side apply)."""
    cluster_target = target(ctx)
    for path in files:
        if cluster_target is not None:
            from ambient.cli import cluster

            cluster.apply(cluster_target, _read_manifest(path)[0], namespace)
            continue
        text, name = _read_manifest(path)
        text = _without_owned_pods(ctx, text)
        if not text.strip():
            continue
        answer = call(ctx, "POST", "/apply", {"text": text, "filename": name})
        for line in answer["result"]:
            click.echo(line)
        for warning in answer.get("warnings", []):
            click.secho(f"warning: {warning}", fg="yellow", err=True)


@click.command(context_settings=CONTEXT)
@click.option(
    "-f", "--filename", "files", multiple=True, required=True, help="YAML file, or - for stdin."
)
@click.option(
    "-n",
    "--namespace",
    default=None,
    help="A cluster: for objects that name none (default: the context's).",
)
@target_options
@click.pass_context
def delete(
    ctx: click.Context, files: tuple[str, ...], namespace: str | None, state_dir: str | None
) -> None:
    """Delete the objects a YAML file names from the running mesh."""
    cluster_target = target(ctx)
    for path in files:
        if cluster_target is not None:
            from ambient.cli import cluster

            cluster.delete(cluster_target, _read_manifest(path)[0], namespace)
            continue
        text, name = _read_manifest(path)
        for line in call(ctx, "POST", "/delete", {"text": text, "filename": name})["result"]:
            click.echo(line)


@click.command(context_settings=CONTEXT)
@click.argument(
    "kind",
    type=click.Choice(
        [
            "namespace",
            "ns",
            "pod",
            "po",
            "pods",
            "service",
            "svc",
            "deployment",
            "deploy",
            "workloadentry",
        ]
    ),
)
@click.argument("name")
@click.argument("labels", nargs=-1, required=True)
@click.option(
    "-n", "--namespace", default=None, help="[default: default; a cluster: the context's]"
)
@click.option("--overwrite", is_flag=True, help="Accepted for kubectl compatibility (always on).")
@target_options
@click.pass_context
def label(
    ctx: click.Context,
    kind: str,
    name: str,
    labels: tuple[str, ...],
    namespace: str | None,
    overwrite: bool,
    state_dir: str | None,
) -> None:
    """Set (key=value) or remove (key-) labels, e.g. istio.io/dataplane-mode=ambient."""
    changes: dict[str, str | None] = {}
    for item in labels:
        if item.endswith("-") and "=" not in item:
            changes[item[:-1]] = None
        elif "=" in item:
            changes[item.split("=", 1)[0]] = item.split("=", 1)[1]
        else:
            fail(f"bad label {item!r}: use key=value to set or key- to remove")
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        click.echo(cluster.label(cluster_target, kind, name, namespace, changes))
        return
    namespace = namespace or "default"
    for key, change in changes.items():
        call(
            ctx,
            "POST",
            "/label",
            {"kind": kind, "namespace": namespace, "name": name, "key": key, "value": change},
        )
    click.echo(f"{_kind_word(kind)}/{name} labeled")


def _kind_word(kind: str) -> str:
    return {
        "ns": "namespace",
        "po": "pod",
        "pods": "pod",
        "svc": "service",
        "deploy": "deployment",
    }.get(kind, kind)
