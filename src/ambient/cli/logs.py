"""kubectl's ``logs`` on the running mesh (files read by ``runtime.podlogs``).

Decisions (kubectl v1.37's behaviour unless said):

- ``logs POD|pod/POD|deploy/NAME``: a Deployment's first pod by name
  (``Found N pods, using pod/X`` on stderr when it has several, as kubectl); a pod
  with several containers and no ``-c``: the first (``Defaulted container "a" out
  of: a, b``); ``--all-containers`` every one. ``deploy/W`` of a waypoint (a Gateway
  of class ``istio-waypoint``) is the waypoint's log: the lines the node proxies
  hosting it logged about it, access lines included (``runtime.podlogs``); ``up
  --single-process`` keeps no per-node log files, so it is refused there. ``-f``
  follows until Ctrl-C or until the pod is gone.
- The mesh's own processes are the pods of ``ambient-system`` (``local.systempods``;
  ``-n istio-system`` names them too, as Istio's are there): ``ztunnel-<node>``
  (``app=ztunnel``, ``ds/ztunnel`` the first node's, as kubectl picks one pod of a
  DaemonSet) and ``controlplane`` (``app=istiod``). Their lines carry their time of
  day, so ``--since`` is exact for them.
- ``-l SELECTOR`` (not with a name: ``only a selector (-l) or a POD name is
  allowed``): every matching pod of the namespace by name, one after the other, the
  last 10 lines of each unless ``--tail`` is given; none is ``No resources found in
  NS namespace.`` on stderr, exit 0. ``-f`` follows them all at once, at most
  ``--max-log-requests`` (5) streams. ``--prefix`` starts each line with
  ``[pod/NAME/CONTAINER] ``.
- On a cluster (``--kubeconfig``), the pods are found through the API server and
  their logs read from the kubelet socket of their node (``cli.clusterlogs``): the
  nodes of ``ambient up --kubeconfig`` on this host, as ``ambient exec`` reaches them
  and to the same callers only (``kubelet.logs``). A waypoint's pod there is its
  node proxy's lines about it; ``-n istio-system ds/ztunnel`` picks a node's ztunnel
  pod. ``kubectl logs`` cannot reach these nodes (no kubelet API on port 10250).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ambient.cli.app import CONTEXT, call, fail, parse_duration, state, target, target_options
from ambient.cli.get import resolve_kind
from ambient.cli.selectors import SelectorError, parse_selector
from ambient.kube.api import ClusterTarget
from ambient.local.systempods import ISTIO_NAMESPACE, SYSTEM_NAMESPACE
from ambient.runtime.podlogs import (
    LogSource,
    follow,
    node_log_paths,
    pod_sources,
    read_lines,
    tail,
    waypoint_lines,
)

__all__ = ["logs", "not_found", "split_ref"]

SELECTOR_TAIL = 10  # kubectl's --tail with -l and no --tail
_SYSTEM = (SYSTEM_NAMESPACE, ISTIO_NAMESPACE)


def split_ref(ref: str, default_kind: str = "Pod") -> tuple[str, str]:
    """``deploy/web`` -> (Deployment, web); ``web-1`` -> (``default_kind``, web-1)."""
    if "/" in ref:
        kind, _, name = ref.partition("/")
        return resolve_kind(kind), name
    return default_kind, ref


def not_found(plural: str, name: str) -> None:
    """kubectl's NotFound line; exit 1."""
    click.echo(f'Error from server (NotFound): {plural} "{name}" not found', err=True)
    sys.exit(1)


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.now(UTC) - parse_duration(text)


@click.command(context_settings=CONTEXT)
@click.argument("ref", metavar="POD|TYPE/NAME", required=False)
@click.option(
    "-n", "--namespace", default=None, help="default: default (the context's on a cluster)"
)
@click.option("-c", "--container", default=None, help="The container (default: the first).")
@click.option("--all-containers", is_flag=True, help="Every container of the pod(s).")
@click.option("-l", "--selector", default=None, help="Every pod with these labels (k=v, ...).")
@click.option("-f", "--follow", "follow_", is_flag=True, help="Stream new lines until Ctrl-C.")
@click.option(
    "--tail",
    "tail_",
    type=int,
    default=None,
    help="Only the last N lines (-1: all; default all, 10 per pod with -l).",
)
@click.option("--since", default=None, help="Only lines since this long ago (5s, 2m, 3h).")
@click.option("--prefix", is_flag=True, help="Start each line with [pod/NAME/CONTAINER].")
@click.option(
    "--max-log-requests",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="At most this many logs followed at once (-l -f).",
)
@target_options
@click.pass_context
def logs(
    ctx: click.Context,
    ref: str | None,
    namespace: str | None,
    container: str | None,
    all_containers: bool,
    selector: str | None,
    follow_: bool,
    tail_: int | None,
    since: str | None,
    prefix: bool,
    max_log_requests: int,
    state_dir: str | None,
) -> None:
    """Print a pod's container output (kubectl logs); deploy/WAYPOINT is a waypoint's log
    with its access lines; -n istio-system (or ambient-system) holds the mesh's own
    processes (ztunnel-NODE, controlplane). On a cluster (--kubeconfig), from the
    kubelet socket of the pod's node (`ambient up --kubeconfig` on this host).

    Examples: ambient logs -n shop deploy/waypoint --tail 20 -f;
    ambient logs -n istio-system -l app=ztunnel"""
    if ref is not None and selector is not None:
        fail("only a selector (-l) or a POD name is allowed")
    if ref is None and selector is None:
        fail("expected POD, TYPE/NAME or -l SELECTOR (e.g. ambient logs -n shop deploy/web)")
    if all_containers and container is not None:
        fail(f"--all-containers=true should not be specified with container name {container}")
    if tail_ is not None and tail_ < -1:
        fail("--tail must be greater than or equal to -1")
    start = _since(since)
    cluster_target = target(ctx)
    if cluster_target is not None:
        _cluster(cluster_target, namespace, ref, selector, container, all_containers,
                 follow_, tail_, start, prefix, max_log_requests)  # fmt: skip
        return
    namespace = namespace or "default"
    logs_dir = state(ctx).root / "logs"
    if selector is not None:
        sources = _selected(ctx, logs_dir, namespace, selector, container, all_containers)
        count = SELECTOR_TAIL if tail_ is None else tail_
        if follow_ and len(sources) > max_log_requests:
            fail(
                f"you are attempting to follow {len(sources)} log streams, but maximum "
                f"allowed concurrency is {max_log_requests}, use --max-log-requests to "
                "increase the limit"
            )
        offsets = _print(sources, count, start, prefix)
        if follow_ and sources:
            _follow_sources(sources, offsets, prefix)
        return
    assert ref is not None
    count = -1 if tail_ is None else tail_
    if ref in ("ds/ztunnel", "daemonset/ztunnel") or namespace in _SYSTEM:
        pod = _system_pod(ctx, ref)
    else:
        kind, name = split_ref(ref)
        if kind not in ("Pod", "Deployment"):
            fail(f"cannot get logs of a {kind.lower()}: give a pod or deploy/NAME")
        if kind == "Deployment" and _waypoint(ctx, namespace, name):
            _waypoint_logs(ctx, namespace, name, follow_, count, start)
            return
        pod = _app_pod(ctx, namespace, kind, name)
    sources = _sources(logs_dir, pod, container, all_containers)
    offsets = _print(sources, count, start, prefix)
    if follow_ and len(sources) == 1 and not pod.get("system"):
        _follow_pod(ctx, sources[0], offsets[0], pod["name"], namespace, prefix)
    elif follow_:
        _follow_sources(sources, offsets, prefix)


def _cluster(
    cluster_target: ClusterTarget,
    namespace: str | None,
    ref: str | None,
    selector: str | None,
    container: str | None,
    all_containers: bool,
    follow_: bool,
    tail_: int | None,
    start: datetime | None,
    prefix: bool,
    max_log_requests: int,
) -> None:
    from ambient.cli import cluster
    from ambient.cli.clusterlogs import LogRequest, cluster_logs

    kind, name = split_ref(ref) if ref is not None else ("Pod", None)
    if kind not in ("Pod", "Deployment", "DaemonSet"):
        fail(f"cannot get logs of a {kind.lower()}: give a pod, deploy/NAME or ds/NAME")
    if selector is not None:
        try:
            parse_selector(selector)
        except SelectorError as exc:
            fail(f"bad selector: {exc}")
    ask = LogRequest(
        namespace=namespace or cluster.context_namespace(cluster_target),
        kind=kind,
        name=name,
        selector=selector,
        container=container,
        all_containers=all_containers,
        follow=follow_,
        tail=SELECTOR_TAIL if tail_ is None and selector is not None else tail_,
        since=start,
        prefix=prefix,
        max_log_requests=max_log_requests,
    )
    cluster_logs(cluster_target, ask)


def _sources(
    logs_dir: Path, pod: dict[str, Any], container: str | None, all_containers: bool
) -> list[LogSource]:
    try:
        sources, note = pod_sources(logs_dir, pod, container, all_containers)
    except ValueError as exc:
        fail(str(exc))
    if note:
        click.echo(note, err=True)
    return sources


def _selected(
    ctx: click.Context,
    logs_dir: Path,
    namespace: str,
    selector: str,
    container: str | None,
    all_containers: bool,
) -> list[LogSource]:
    """The sources of every pod of ``namespace`` matching ``selector``, by pod name."""
    try:
        matches = parse_selector(selector)
    except SelectorError as exc:
        fail(f"bad selector: {exc}")
    pods = [p for p in call(ctx, "GET", "/pods") if p["namespace"] == namespace]
    if namespace in _SYSTEM:
        pods += call(ctx, "GET", "/system-pods")
    chosen = sorted((p for p in pods if matches(p.get("labels") or {})), key=lambda p: p["name"])
    if not chosen:
        click.echo(f"No resources found in {namespace} namespace.", err=True)
    sources: list[LogSource] = []
    for pod in chosen:
        sources += _sources(logs_dir, pod, container, all_containers)
    return sources


def _system_pod(ctx: click.Context, ref: str) -> dict[str, Any]:
    """A pod of the mesh's own by name, or ``ds/ztunnel`` (the first node's)."""
    pods: list[dict[str, Any]] = sorted(call(ctx, "GET", "/system-pods"), key=lambda p: p["name"])
    if ref in ("ds/ztunnel", "daemonset/ztunnel"):
        ztunnels = [p for p in pods if p.get("workload_type") == "daemonset"]
        if not ztunnels:
            fail(
                "no ztunnel pods in this mesh (ambient up --single-process logs to its own stderr)"
            )
        if len(ztunnels) > 1:
            click.echo(f"Found {len(ztunnels)} pods, using pod/{ztunnels[0]['name']}", err=True)
        return ztunnels[0]
    name = ref.removeprefix("pod/")
    pod = next((p for p in pods if p["name"] == name), None)
    if pod is None:
        not_found("pods", name)
    assert pod is not None
    return pod


def _app_pod(ctx: click.Context, namespace: str, kind: str, name: str) -> dict[str, Any]:
    pods: list[dict[str, Any]] = [
        p for p in call(ctx, "GET", "/pods") if p["namespace"] == namespace
    ]
    if kind == "Pod":
        pod = next((p for p in pods if p["name"] == name), None)
        if pod is None:
            not_found("pods", name)
        assert pod is not None
        return pod
    mine = sorted(
        (p for p in pods if p.get("workload_type") == "deployment" and p["workload"] == name),
        key=lambda p: p["name"],
    )
    if not mine:
        if not any(m["manifest"].get("kind") == "Deployment" and m["manifest"]["metadata"]["name"] == name
                   and m["manifest"]["metadata"].get("namespace") == namespace
                   for m in call(ctx, "GET", "/manifests")):  # fmt: skip
            not_found("deployments.apps", name)
        fail(f"no pods of deployment {name} are running")
    if len(mine) > 1:
        click.echo(f"Found {len(mine)} pods, using pod/{mine[0]['name']}", err=True)
    return mine[0]


def _print(sources: list[LogSource], count: int, start: datetime | None, prefix: bool) -> list[int]:
    """Each source's last ``count`` lines in turn; the offsets following starts from."""
    offsets = []
    for source in sources:
        lines, offset = read_lines(source, count=count, since=start)
        for line in lines:
            click.echo(source.prefix + line if prefix else line)
        offsets.append(offset)
    return offsets


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


def _follow_pod(
    ctx: click.Context, source: LogSource, offset: int, pod: str, namespace: str, prefix: bool
) -> None:
    """Print lines appended to one container's log until Ctrl-C or the pod is gone."""
    reader = follow(source.path, offset)
    checked = time.monotonic()
    try:
        while True:
            line = next(reader)
            if line:
                for kept in source.lines(line):
                    click.echo(source.prefix + kept if prefix else kept)
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


def _follow_sources(sources: list[LogSource], offsets: list[int], prefix: bool) -> None:
    def keep(source: LogSource) -> Callable[[str], Iterable[str]]:
        def lines(line: str) -> list[str]:
            return [source.prefix + k if prefix else k for k in source.lines(line)]

        return lines

    _follow_many([s.path for s in sources], offsets, [keep(s) for s in sources])


def _follow_many(
    paths: list[Path],
    offsets: list[int],
    keep: Callable[[str], Iterable[str]] | list[Callable[[str], Iterable[str]]],
) -> None:
    """Lines appended to any of ``paths`` (each read through its ``keep``) until Ctrl-C."""
    keeps = keep if isinstance(keep, list) else [keep] * len(paths)
    readers = [follow(p, o) for p, o in zip(paths, offsets, strict=True)]
    try:
        while True:
            idle = True
            for reader, kept_of in zip(readers, keeps, strict=True):
                line = next(reader)
                if line:
                    idle = False
                    for kept in kept_of(line):
                        click.echo(kept)
            if idle:
                time.sleep(0.1)
    except KeyboardInterrupt:
        return
