"""kubectl's ``scale`` and ``wait`` on the running mesh and on a cluster (``logs``:
``cli.logs``).

Decisions (kubectl v1.37's behaviour unless said):

- ``scale``: folder mode applies the Deployment's manifest with the new
  ``spec.replicas`` (journaled like ``apply``; a later edit of its file wins, as
  ``kubectl apply`` of the file would); a cluster gets the ``scale`` subresource
  patched. Prints ``deployment.apps/NAME scaled``.
- ``wait --for=condition=C[=V]`` (default value True) or ``--for=delete`` on
  ``KIND/NAME`` (``-l`` or ``--all`` for several): polls every 0.2 s; each object
  prints ``KIND/NAME condition met`` (``deleted``); a timeout prints ``error: timed
  out waiting for the condition on PLURAL/NAME`` and exits 1; a named object that
  does not exist is ``Error from server (NotFound)``, exit 1.
"""

from __future__ import annotations

import time
from typing import Any

import click

from ambient.cli.app import CONTEXT, call, fail, parse_duration, target, target_options
from ambient.cli.get import folder_objects, in_namespace, resolve_kind
from ambient.cli.logs import not_found, split_ref
from ambient.cli.selectors import SelectorError, parse_selector

__all__ = ["scale", "wait"]

_GROUPS = {"Deployment": "apps", "Gateway": "gateway.networking.k8s.io"}
_GROUPS |= {k: "networking.istio.io" for k in ("VirtualService", "DestinationRule")}
_GROUPS |= {k: "networking.istio.io" for k in ("ServiceEntry", "WorkloadEntry")}
_GROUPS |= {k: "security.istio.io" for k in ("AuthorizationPolicy", "PeerAuthentication")}
_GROUPS |= {"RequestAuthentication": "security.istio.io", "HTTPRoute": "gateway.networking.k8s.io"}
_GROUPS |= {"GRPCRoute": "gateway.networking.k8s.io", "Telemetry": "telemetry.istio.io"}


def _qualified(kind: str) -> str:
    """kubectl's ``kind.group`` in its messages: ``deployment.apps``, ``pod``."""
    group = _GROUPS.get(kind)
    return f"{kind.lower()}.{group}" if group else kind.lower()


def _plural(kind: str) -> str:
    from ambient.cli.get import _KIND_INFO

    return _KIND_INFO[kind][2]


# -- scale ---------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("ref", metavar="deploy/NAME")
@click.option("--replicas", type=click.IntRange(min=0), required=True, help="The new count.")
@click.option(
    "-n", "--namespace", default=None, help="[default: default; a cluster: the context's]"
)
@target_options
@click.pass_context
def scale(
    ctx: click.Context, ref: str, replicas: int, namespace: str | None, state_dir: str | None
) -> None:
    """Set a Deployment's replicas (kubectl scale).

    Example: ambient scale deploy/orders-v2 --replicas 3 -n shop"""
    kind, name = split_ref(ref, "Deployment")
    if kind != "Deployment":
        fail(f"cannot scale a {kind.lower()}: only deployments")
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        cluster.scale(cluster_target, namespace, name, replicas)
        click.echo(f"deployment.apps/{name} scaled")
        return
    namespace = namespace or "default"
    found = next(
        (
            item
            for item in call(ctx, "GET", "/manifests")
            if item["manifest"].get("kind") == "Deployment"
            and item["manifest"]["metadata"]["name"] == name
            and item["manifest"]["metadata"].get("namespace", "default") == namespace
        ),
        None,
    )
    if found is None:
        not_found("deployments.apps", name)
        return
    manifest = found["manifest"]
    manifest.pop("status", None)
    manifest.setdefault("spec", {})["replicas"] = replicas
    import yaml

    call(ctx, "POST", "/apply", {"text": yaml.safe_dump(manifest), "filename": found["file"]})
    click.echo(f"deployment.apps/{name} scaled")


# -- wait ----------------------------------------------------------------------------------


def _condition_met(obj: dict[str, Any], condition: str, value: str) -> bool:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if str(item.get("type", "")).lower() == condition.lower():
            return str(item.get("status", "")).lower() == value.lower()
    return False


@click.command(context_settings=CONTEXT)
@click.argument("refs", nargs=-1, metavar="KIND/NAME...")
@click.option("--for", "for_", required=True, help="condition=NAME[=VALUE] or delete.")
@click.option(
    "--timeout", default="30s", show_default=True, help="How long to wait (0s: check once)."
)
@click.option(
    "-n", "--namespace", default=None, help="[default: default; a cluster: the context's]"
)
@click.option("-l", "--selector", default=None, help="Every object of KIND with these labels.")
@click.option("--all", "all_", is_flag=True, help="Every object of KIND in the namespace.")
@target_options
@click.pass_context
def wait(
    ctx: click.Context,
    refs: tuple[str, ...],
    for_: str,
    timeout: str,
    namespace: str | None,
    selector: str | None,
    all_: bool,
    state_dir: str | None,
) -> None:
    """Wait for a condition on objects (kubectl wait).

    Example: ambient wait --for=condition=Programmed gateway/waypoint -n shop --timeout 60s"""
    if for_ == "delete":
        condition, value = "", ""
    elif for_.startswith("condition="):
        condition, _, value = for_.removeprefix("condition=").partition("=")
        value = value or "True"
    else:
        fail(f"unrecognized condition: {for_!r} (use condition=NAME[=VALUE] or delete)")
    if not refs:
        fail("you must specify the resources to wait for, e.g. pod/NAME")
    seconds = parse_duration(timeout).total_seconds() if timeout not in ("0", "0s") else 0.0
    parsed = [split_ref(r) if "/" in r or len(refs) > 1 else (resolve_kind(r), "") for r in refs]
    try:
        matches = parse_selector(selector or "")
    except SelectorError as exc:
        fail(f"bad selector: {exc}")
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        namespace = namespace or cluster.context_namespace(cluster_target)
    namespace = namespace or "default"

    def lookup(kind: str) -> list[dict[str, Any]]:
        if cluster_target is not None:
            from ambient.cli import cluster

            return cluster.objects(cluster_target, kind, namespace, selector)
        return [
            o
            for o in folder_objects(ctx, kind)
            if in_namespace(o, namespace) and matches((o.get("metadata") or {}).get("labels") or {})
        ]

    pending: list[tuple[str, str]] = []
    for kind, name in parsed:
        if name:
            if for_ != "delete" and not any(o["metadata"]["name"] == name for o in lookup(kind)):
                not_found(_plural(kind), name)
            pending.append((kind, name))
        else:
            if not (all_ or selector):
                fail("resource name may not be empty (or give --all or -l)")
            names = [o["metadata"]["name"] for o in lookup(kind)]
            if not names:
                fail("no matching resources found")
            pending += [(kind, n) for n in names]
    deadline = time.monotonic() + seconds
    while True:
        by_kind = {
            kind: {o["metadata"]["name"]: o for o in lookup(kind)}
            for kind in {k for k, _ in pending}
        }
        still = []
        for kind, name in pending:
            obj = by_kind[kind].get(name)
            if for_ == "delete":
                done = obj is None
            else:
                done = obj is not None and _condition_met(obj, condition, value)
            if done:
                word = "deleted" if for_ == "delete" else "condition met"
                click.echo(f"{_qualified(kind)}/{name} {word}")
            else:
                still.append((kind, name))
        pending = still
        if not pending:
            return
        if time.monotonic() >= deadline:
            kind, name = pending[0]
            fail(f"timed out waiting for the condition on {_plural(kind)}/{name}")
        time.sleep(0.2)
