"""kubectl's ``logs``, ``scale`` and ``wait`` on the running mesh (and ``scale``/``wait``
on a cluster).

Decisions (kubectl v1.37's behaviour unless said):

- ``logs POD|pod/POD|deploy/NAME``: a Deployment's first pod by name
  (``Found N pods, using pod/X`` on stderr when it has several, as kubectl); a pod
  with several containers and no ``-c``: the first (``Defaulted container "a" out
  of: a, b``). ``deploy/W`` of a waypoint (a Gateway of class ``istio-waypoint``)
  is the waypoint's log: the lines the node proxies hosting it logged about it,
  access lines included (``cli.podlogs``); ``up --single-process`` keeps no per-node
  log files, so it is refused there. ``-f`` follows until Ctrl-C or until the pod
  is gone. On a cluster, logs are not served yet (the node side is the kubelet's).
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

import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from ambient.cli.app import CONTEXT, call, fail, parse_duration, state, target, target_options
from ambient.cli.get import folder_objects, resolve_kind
from ambient.cli.podlogs import container_lines, follow, node_log_paths, tail, waypoint_lines
from ambient.cli.selectors import SelectorError, parse_selector

__all__ = ["logs", "scale", "wait"]

_GROUPS = {"Deployment": "apps", "Gateway": "gateway.networking.k8s.io"}
_GROUPS |= {k: "networking.istio.io" for k in ("VirtualService", "DestinationRule")}
_GROUPS |= {k: "networking.istio.io" for k in ("ServiceEntry", "WorkloadEntry")}
_GROUPS |= {k: "security.istio.io" for k in ("AuthorizationPolicy", "PeerAuthentication")}
_GROUPS |= {"RequestAuthentication": "security.istio.io", "HTTPRoute": "gateway.networking.k8s.io"}
_GROUPS |= {"GRPCRoute": "gateway.networking.k8s.io", "Telemetry": "telemetry.istio.io"}


def _split_ref(ref: str, default_kind: str = "Pod") -> tuple[str, str]:
    """``deploy/web`` -> (Deployment, web); ``web-1`` -> (``default_kind``, web-1)."""
    if "/" in ref:
        kind, _, name = ref.partition("/")
        return resolve_kind(kind), name
    return default_kind, ref


def _qualified(kind: str) -> str:
    """kubectl's ``kind.group`` in its messages: ``deployment.apps``, ``pod``."""
    group = _GROUPS.get(kind)
    return f"{kind.lower()}.{group}" if group else kind.lower()


def _plural(kind: str) -> str:
    from ambient.cli.get import _KIND_INFO

    return _KIND_INFO[kind][2]


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.now(UTC) - parse_duration(text)


# -- logs ----------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("ref", metavar="POD|TYPE/NAME")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-c", "--container", default=None, help="The container (default: the first).")
@click.option("-f", "--follow", "follow_", is_flag=True, help="Stream new lines until Ctrl-C.")
@click.option("--tail", "tail_", type=int, default=-1, help="Only the last N lines (-1: all).")
@click.option("--since", default=None, help="Only lines since this long ago (5s, 2m, 3h).")
@target_options
@click.pass_context
def logs(
    ctx: click.Context,
    ref: str,
    namespace: str,
    container: str | None,
    follow_: bool,
    tail_: int,
    since: str | None,
    state_dir: str | None,
) -> None:
    """Print a pod's container output (kubectl logs); deploy/WAYPOINT is a waypoint's log
    with its access lines.

    Example: ambient logs -n shop deploy/waypoint --tail 20 -f"""
    if target(ctx) is not None:
        fail(
            "logs from a cluster are not served yet: use kubectl logs (the node side is the kubelet's)"
        )
    start = _since(since)
    if ref in ("ds/ztunnel", "daemonset/ztunnel") or namespace in _SYSTEM:
        _system_logs(ctx, ref, follow_, tail_, start)
        return
    kind, name = _split_ref(ref)
    if kind not in ("Pod", "Deployment"):
        fail(f"cannot get logs of a {kind.lower()}: give a pod or deploy/NAME")
    pods = [p for p in call(ctx, "GET", "/pods") if p["namespace"] == namespace]
    if kind == "Deployment":
        waypoint = _waypoint(ctx, namespace, name)
        if waypoint:
            _waypoint_logs(ctx, namespace, name, follow_, tail_, start)
            return
        mine = sorted(
            (p for p in pods if p.get("workload_type") == "deployment" and p["workload"] == name),
            key=lambda p: p["name"],
        )
        if not mine:
            if not any(m["manifest"].get("kind") == "Deployment" and m["manifest"]["metadata"]["name"] == name
                       and m["manifest"]["metadata"].get("namespace") == namespace
                       for m in call(ctx, "GET", "/manifests")):  # fmt: skip
                _not_found("deployments.apps", name)
            fail(f"no pods of deployment {name} are running")
        if len(mine) > 1:
            click.echo(f"Found {len(mine)} pods, using pod/{mine[0]['name']}", err=True)
        pod = mine[0]
    else:
        pod = next((p for p in pods if p["name"] == name), None)
        if pod is None:
            _not_found("pods", name)
    names = [c["name"] for c in pod.get("containers", [])]
    if container is None:
        container = names[0] if names else ""
        if len(names) > 1:
            click.echo(f'Defaulted container "{container}" out of: {", ".join(names)}', err=True)
    elif container not in names:
        fail(f"container {container} is not valid for pod {pod['name']}")
    path = state(ctx).root / "logs" / f"{namespace}_{pod['name']}_{container}.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    for line in tail(container_lines(text, start), tail_):
        click.echo(line)
    if follow_:
        _follow(
            ctx,
            [path],
            lambda line: container_lines(line),
            pod["name"],
            namespace,
            len(text.encode()),
        )


_SYSTEM = ("ambient-system", "istio-system")


def _system_logs(
    ctx: click.Context, ref: str, follow_: bool, count: int, start: datetime | None
) -> None:
    """The mesh's own processes (``ambient up``'s ``ambient-system`` pods: ``controlplane``,
    ``ztunnel-<node>``; ``ds/ztunnel`` is the first node's, as kubectl picks one pod of a
    DaemonSet). Their lines carry their time of day, so ``--since`` is exact."""
    logs = state(ctx).root / "logs"
    pods = sorted(p.name.split("_")[1] for p in logs.glob("ambient-system_*.log"))
    if ref in ("ds/ztunnel", "daemonset/ztunnel"):
        ztunnels = [p for p in pods if p.startswith("ztunnel-")]
        if not ztunnels:
            fail(
                "no ztunnel log in this mesh's state folder (ambient up --single-process logs to its own stderr)"
            )
        if len(ztunnels) > 1:
            click.echo(f"Found {len(ztunnels)} pods, using pod/{ztunnels[0]}", err=True)
        name = ztunnels[0]
    else:
        name = ref.removeprefix("pod/")
        if name not in pods:
            _not_found("pods", name)
    path = logs / f"ambient-system_{name}_{name}.log"
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    if start is not None:
        lines = waypoint_lines([text], "", start, untagged=True)
    for line in tail(lines, count):
        click.echo(line)
    if follow_:
        _follow_many([path], [len(text.encode())], lambda line: [line])


def _not_found(plural: str, name: str) -> None:
    click.echo(f'Error from server (NotFound): {plural} "{name}" not found', err=True)
    sys.exit(1)


def _waypoint(ctx: click.Context, namespace: str, name: str) -> bool:
    for item in call(ctx, "GET", "/manifests"):
        m = item["manifest"]
        meta = m.get("metadata") or {}
        if (
            m.get("kind") == "Gateway"
            and meta.get("name") == name
            and meta.get("namespace") == namespace
            and (m.get("spec") or {}).get("gatewayClassName") == "istio-waypoint"
        ):
            return True
    return False


def _waypoint_logs(
    ctx: click.Context,
    namespace: str,
    name: str,
    follow_: bool,
    count: int,
    start: datetime | None,
) -> None:
    status = call(ctx, "GET", "/status")
    if status.get("mode") == "single-process":
        fail(
            "a waypoint's log needs the node proxies' log files: `ambient up` without --single-process"
        )
    nodes = [n["name"] for n in call(ctx, "GET", "/nodes")]
    paths = node_log_paths(state(ctx).root, nodes)
    texts = [p.read_text(errors="replace") for p in paths]
    workload = f"{namespace}/{name}"
    for line in tail(waypoint_lines(texts, workload, start), count):
        click.echo(line)
    if follow_:
        offsets = [len(t.encode()) for t in texts]
        _follow_many(paths, offsets, lambda line: waypoint_lines([line], workload))


def _follow(
    ctx: click.Context, paths: list[Any], keep: Any, pod: str, namespace: str, offset: int
) -> None:
    """Print lines appended to the container's log until Ctrl-C or the pod is gone."""
    reader = follow(paths[0], offset)
    checked = time.monotonic()
    try:
        while True:
            line = next(reader)
            if line:
                for kept in keep(line):
                    click.echo(kept)
                continue
            if time.monotonic() - checked > 1.0:
                checked = time.monotonic()
                if not any(
                    p["name"] == pod and p["namespace"] == namespace
                    for p in call(ctx, "GET", "/pods")
                ):
                    return
            time.sleep(0.1)
    except KeyboardInterrupt:
        return


def _follow_many(paths: list[Any], offsets: list[int], keep: Any) -> None:
    readers = [follow(p, o) for p, o in zip(paths, offsets, strict=True)]
    try:
        while True:
            idle = True
            for reader in readers:
                line = next(reader)
                if line:
                    idle = False
                    for kept in keep(line):
                        click.echo(kept)
            if idle:
                time.sleep(0.1)
    except KeyboardInterrupt:
        return


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
    kind, name = _split_ref(ref, "Deployment")
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
        _not_found("deployments.apps", name)
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
    parsed = [_split_ref(r) if "/" in r or len(refs) > 1 else (resolve_kind(r), "") for r in refs]
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
            if (o.get("metadata") or {}).get("namespace", namespace) == namespace
            and matches((o.get("metadata") or {}).get("labels") or {})
        ]

    pending: list[tuple[str, str]] = []
    for kind, name in parsed:
        if name:
            if for_ != "delete" and not any(o["metadata"]["name"] == name for o in lookup(kind)):
                _not_found(_plural(kind), name)
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
