"""The ``ambient`` command: istioctl + kubectl for a mesh that runs on plain hosts.

Every command finds the running mesh through its state folder: ``--state-dir``
(anywhere among the options, before or after the command name) or
``$AMBIENT_STATE_DIR``, default ``./.ambient``.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml

from ambient import __version__
from ambient.cli import jsonpath
from ambient.cli.client import ApiError, MeshClient
from ambient.cli.install import install_command, uninstall_command
from ambient.cli.output import print_json, print_table
from ambient.local.statedir import ENV_VAR, MeshNotRunning, StateDir

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def state_dir_option(f: Any) -> Any:
    return click.option(
        "--state-dir",
        envvar=ENV_VAR,
        type=click.Path(file_okay=False),
        help="State folder of the mesh (default ./.ambient, or $AMBIENT_STATE_DIR).",
        expose_value=True,
        is_eager=False,
        callback=_remember_state_dir,
    )(f)


def _remember_state_dir(
    ctx: click.Context, _param: click.Parameter, value: str | None
) -> str | None:
    root = ctx.find_root()
    if value is not None:
        root.meta["state_dir"] = value
    return value


def _state(ctx: click.Context) -> StateDir:
    return StateDir.resolve(ctx.find_root().meta.get("state_dir"))


def fail(message: str, code: int = 1) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def _client(ctx: click.Context) -> MeshClient:
    try:
        return MeshClient(_state(ctx))
    except MeshNotRunning as exc:
        fail(str(exc))


def _call(ctx: click.Context, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    client = _client(ctx)
    try:
        return client.get(path) if method == "GET" else client.post(path, body or {})
    except (ApiError, MeshNotRunning) as exc:
        fail(str(exc))


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="ambient")
@state_dir_option
def cli(state_dir: str | None) -> None:
    """ambient: a sidecar-less, zero-trust service mesh (Istio's ambient mode).

    Start a mesh from a folder of Kubernetes/Istio YAML with `ambient up DIR`,
    then inspect and change it with the other commands.
    """


# -- up / status ---------------------------------------------------------------------


@cli.command(context_settings=CONTEXT)
@click.argument("config_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@state_dir_option
@click.option(
    "--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"])
)
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
    from ambient.cli.distributed import parse_duration
    from ambient.local.daemon import run

    if netns:
        from ambient.nodeagent.netns import missing_capability

        problem = missing_capability()
        if problem is not None:
            fail(problem)
    ttl = parse_duration(cert_ttl).total_seconds() if cert_ttl else None
    sys.exit(
        run(
            config_dir,
            _state(ctx),
            log_level,
            single_process=single_process,
            cert_ttl=ttl,
            netns=netns,
        )
    )


@cli.command(context_settings=CONTEXT)
@state_dir_option
@click.pass_context
def down(ctx: click.Context, state_dir: str | None) -> None:
    """Stop the mesh of this state folder if it runs, and remove every network namespace,
    link and rule its --netns mode made (also after a crash)."""
    from ambient.nodeagent.down import down as take_down

    for line in take_down(_state(ctx)):
        print(line)


@cli.command(context_settings=CONTEXT)
@state_dir_option
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
    """Show whether the control plane, every ztunnel and every pod are ready."""
    deadline = time.monotonic() + (wait or 0)
    state = _state(ctx)
    while True:
        try:
            result = MeshClient(state, timeout=5).get("/status")
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
    if wait is not None and not result["ready"]:
        fail(f"not ready after {wait:g}s")


# -- exec --------------------------------------------------------------------------


@cli.command("exec", context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.option("-n", "--namespace", default="default", show_default=True)
@state_dir_option
@click.argument("target")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(
    ctx: click.Context, namespace: str, state_dir: str | None, target: str, command: tuple[str, ...]
) -> None:
    """Run COMMAND as pod TARGET (or deploy/NAME): its environment, its working folder.

    Example: ambient exec -n shop deploy/web -- curl -s http://orders:8080/
    """
    pods = [p for p in _call(ctx, "GET", "/pods") if p["namespace"] == namespace]
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


# -- apply / delete / label / get -------------------------------------------------------------


def _read_manifest(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(), path
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")


@cli.command(context_settings=CONTEXT)
@click.option(
    "-f", "--filename", "files", multiple=True, required=True, help="YAML file, or - for stdin."
)
@state_dir_option
@click.pass_context
def apply(ctx: click.Context, files: tuple[str, ...], state_dir: str | None) -> None:
    """Create or update objects in the running mesh."""
    for path in files:
        text, name = _read_manifest(path)
        answer = _call(ctx, "POST", "/apply", {"text": text, "filename": name})
        for line in answer["result"]:
            click.echo(line)
        for warning in answer.get("warnings", []):
            click.secho(f"warning: {warning}", fg="yellow", err=True)


@cli.command(context_settings=CONTEXT)
@click.option(
    "-f", "--filename", "files", multiple=True, required=True, help="YAML file, or - for stdin."
)
@state_dir_option
@click.pass_context
def delete(ctx: click.Context, files: tuple[str, ...], state_dir: str | None) -> None:
    """Delete the objects a YAML file names from the running mesh."""
    for path in files:
        text, name = _read_manifest(path)
        for line in _call(ctx, "POST", "/delete", {"text": text, "filename": name})["result"]:
            click.echo(line)


@cli.command(context_settings=CONTEXT)
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
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--overwrite", is_flag=True, help="Accepted for kubectl compatibility (always on).")
@state_dir_option
@click.pass_context
def label(
    ctx: click.Context,
    kind: str,
    name: str,
    labels: tuple[str, ...],
    namespace: str,
    overwrite: bool,
    state_dir: str | None,
) -> None:
    """Set (key=value) or remove (key-) labels, e.g. istio.io/dataplane-mode=ambient."""
    for item in labels:
        if item.endswith("-") and "=" not in item:
            key, value = item[:-1], None
        elif "=" in item:
            key, value = item.split("=", 1)
        else:
            fail(f"bad label {item!r}: use key=value to set or key- to remove")
        _call(
            ctx,
            "POST",
            "/label",
            {"kind": kind, "namespace": namespace, "name": name, "key": key, "value": value},
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


_GET_KINDS = {
    "pods": "Pod",
    "pod": "Pod",
    "po": "Pod",
    "services": "Service",
    "service": "Service",
    "svc": "Service",
    "namespaces": "Namespace",
    "namespace": "Namespace",
    "ns": "Namespace",
    "deployments": "Deployment",
    "deployment": "Deployment",
    "deploy": "Deployment",
    "serviceaccounts": "ServiceAccount",
    "serviceaccount": "ServiceAccount",
    "sa": "ServiceAccount",
    "workloadentries": "WorkloadEntry",
    "workloadentry": "WorkloadEntry",
    "we": "WorkloadEntry",
    "serviceentries": "ServiceEntry",
    "serviceentry": "ServiceEntry",
    "se": "ServiceEntry",
    "authorizationpolicies": "AuthorizationPolicy",
    "authorizationpolicy": "AuthorizationPolicy",
    "ap": "AuthorizationPolicy",
    "peerauthentications": "PeerAuthentication",
    "peerauthentication": "PeerAuthentication",
    "pa": "PeerAuthentication",
    "gateways": "Gateway",
    "gateway": "Gateway",
    "gtw": "Gateway",
    "httproutes": "HTTPRoute",
    "httproute": "HTTPRoute",
    "virtualservices": "VirtualService",
    "virtualservice": "VirtualService",
    "vs": "VirtualService",
    "destinationrules": "DestinationRule",
    "destinationrule": "DestinationRule",
    "dr": "DestinationRule",
    "requestauthentications": "RequestAuthentication",
    "requestauthentication": "RequestAuthentication",
    "telemetries": "Telemetry",
    "telemetry": "Telemetry",
}


@cli.command(context_settings=CONTEXT)
@click.argument("kind")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default=None, help="Only this namespace.")
@click.option(
    "-A", "--all-namespaces", is_flag=True, help="Every namespace (the default without -n)."
)
@click.option(
    "-o",
    "--output",
    default="table",
    help="table, wide, json, yaml, or jsonpath=TEMPLATE (kubectl's subset).",
)
@state_dir_option
@click.pass_context
def get(
    ctx: click.Context,
    kind: str,
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    output: str,
    state_dir: str | None,
) -> None:
    """List objects of KIND (pods, services, namespaces, deployments, gateways, ...)."""
    real = _GET_KINDS.get(kind.lower().split(".")[0])
    if real is None:
        fail(f"unknown kind {kind!r}; known: {', '.join(sorted(set(_GET_KINDS.values())))}")
    if output not in ("table", "wide", "json", "yaml") and not output.startswith("jsonpath="):
        fail(f"unknown output format {output!r}: use table, wide, json, yaml or jsonpath=...")
    if real == "Pod":
        _get_pods(ctx, name, namespace, output)
        return
    query = f"/resources?kind={real}" + (f"&namespace={namespace}" if namespace else "")
    items = [i for i in _call(ctx, "GET", query) if name is None or i["meta"]["name"] == name]
    if name is not None and not items:
        fail(f"{real.lower()} {name!r} not found")
    if output in ("json", "yaml") or output.startswith("jsonpath="):
        _print_objects(items, name is not None, output)
        return
    rows = []
    for item in items:
        meta = item["meta"]
        labels = ",".join(f"{k}={v}" for k, v in sorted(meta.get("labels", {}).items()))
        row = [meta["name"]] if real == "Namespace" else [meta["namespace"], meta["name"]]
        rows.append([*row, labels or "<none>"])
    headers = ["NAME", "LABELS"] if real == "Namespace" else ["NAMESPACE", "NAME", "LABELS"]
    print_table(headers, rows)


def _print_objects(items: list[dict[str, Any]], single: bool, output: str) -> None:
    """``-o json``: the JSON list the control API returns (scripts rely on it);
    ``-o yaml`` / ``jsonpath``: as kubectl, one object when named, else a ``List``."""
    if output == "json":
        print_json(items)
        return
    objects = [_kube_shape(i) for i in items]
    data: Any = objects[0] if single else {"apiVersion": "v1", "kind": "List", "items": objects}
    if output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
    else:
        try:
            click.echo(jsonpath.render(output.removeprefix("jsonpath="), data), nl=False)
        except jsonpath.JsonPathError as exc:
            fail(f"bad jsonpath template: {exc}")


def _kube_shape(item: dict[str, Any]) -> dict[str, Any]:
    meta = item.get("meta", {})
    metadata = {k: v for k, v in meta.items() if v not in ({}, None, "")}
    shaped: dict[str, Any] = {
        "apiVersion": item.get("api_version"),
        "kind": item.get("kind"),
        "metadata": metadata,
    }
    for key, value in item.items():
        if key not in ("meta", "api_version", "kind"):
            shaped[key] = value
    return shaped


def _get_pods(ctx: click.Context, name: str | None, namespace: str | None, output: str) -> None:
    pods = _call(ctx, "GET", "/pods")
    status = {c["name"]: c for c in _call(ctx, "GET", "/status")["components"]}
    rows = []
    selected = []
    for pod in pods:
        if (namespace and pod["namespace"] != namespace) or (name and pod["name"] != name):
            continue
        selected.append(pod)
        component = status.get(f"pod/{pod['namespace']}/{pod['name']}", {})
        rows.append(
            [
                pod["namespace"],
                pod["name"],
                "Running" if component.get("ready") else "NotReady",
                component.get("detail", ""),
                pod["ip"],
                pod["node"],
            ]
        )
    if output != "table" and output != "wide":
        _print_objects(
            [{k: v for k, v in p.items() if k != "env"} for p in selected], False, output
        )
        return
    print_table(["NAMESPACE", "NAME", "STATUS", "CONTAINERS", "IP", "NODE"], rows)


# -- ztunnel-config ---------------------------------------------------------------------


@cli.command("ztunnel-config", context_settings=CONTEXT)
@click.argument(
    "what",
    type=click.Choice(
        [
            "workloads",
            "workload",
            "services",
            "service",
            "policies",
            "policy",
            "certificates",
            "certificate",
            "waypoints",
            "waypoint",
            "all",
        ]
    ),
)
@click.option(
    "--workload-namespace",
    "-n",
    "namespace",
    default=None,
    help="Only workloads/services of this namespace.",
)
@click.option("--node", default=None, help="Which node's ztunnel to ask (default: the first).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@state_dir_option
@click.pass_context
def ztunnel_config(
    ctx: click.Context,
    what: str,
    namespace: str | None,
    node: str | None,
    output: str,
    state_dir: str | None,
) -> None:
    """Show a ztunnel's view of the mesh (as `istioctl ztunnel-config`).

    `waypoints` (every node) lists the waypoints node proxies run and the L7 objects
    they hold (`-o json` names each one)."""
    dumps = _call(ctx, "GET", "/config_dump" + (f"?node={node}" if node else ""))
    if not dumps:
        fail("no ztunnel is running")
    dump = dumps[0]
    # Certificates and waypoints are per node: gather every node's.
    dump = {
        **dump,
        "certificates": [c for d in dumps for c in d["certificates"]],
        "waypoints": [{"node": d["node"], **w} for d in dumps for w in d.get("waypoints", [])],
    }
    if what == "all":
        if output == "json":
            print_json(dump)
            return
        for part in ("workloads", "services", "policies", "certificates", "waypoints"):
            _zc_table(part, dump, namespace)
            click.echo()
        return
    part = {
        "workload": "workloads",
        "service": "services",
        "policy": "policies",
        "certificate": "certificates",
        "waypoint": "waypoints",
    }.get(what, what)
    if output == "json":
        print_json(_zc_filter(part, dump, namespace))
        return
    _zc_table(part, dump, namespace)


def _zc_filter(part: str, dump: dict[str, Any], namespace: str | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = dump[part]
    if namespace and part in ("workloads", "services", "policies", "waypoints"):
        items = [i for i in items if i["namespace"] == namespace]
    return items


def _zc_table(part: str, dump: dict[str, Any], namespace: str | None) -> None:
    items = _zc_filter(part, dump, namespace)
    if part == "workloads":
        rows = [
            [
                w["namespace"],
                w["name"],
                ",".join(w["workloadIps"]),
                w["node"],
                _waypoint_name(w["waypoint"]),
                w["protocol"],
            ]
            for w in items
        ]
        print_table(["NAMESPACE", "POD NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"], rows)
    elif part == "services":
        healthy = {w["uid"] for w in dump["workloads"] if w["status"] == "Healthy"}
        rows = [
            [
                s["namespace"],
                s["name"],
                ",".join(s["vips"]),
                _waypoint_name(s["waypoint"]),
                f"{len([e for e in s['endpoints'] if e in healthy])}/{len(s['endpoints'])}",
            ]
            for s in items
        ]
        print_table(["NAMESPACE", "SERVICE NAME", "SERVICE VIP", "WAYPOINT", "ENDPOINTS"], rows)
    elif part == "policies":
        rows = [
            [
                p["namespace"],
                p["name"],
                p["action"] + (" (dry-run)" if p["dryRun"] else ""),
                _scope(p),
            ]
            for p in items
        ]
        print_table(["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE"], rows)
    elif part == "waypoints":
        rows = [
            [
                w["namespace"],
                w["name"],
                w["node"],
                w["address"],
                "true" if w["ready"] else "false",
                str(len(w.get("l7", {}).get("resources", []))),
                str(w.get("l7", {}).get("version", "")),
            ]
            for w in items
        ]
        print_table(
            ["NAMESPACE", "WAYPOINT POD", "NODE", "ADDRESS", "READY", "L7 OBJECTS", "VERSION"],
            rows,
        )
    else:
        rows = [
            [
                c["identity"],
                "Leaf",
                c["state"],
                "true" if c["state"] == "Available" else "false",
                c["not_after"],
                c["not_before"],
            ]
            for c in items
        ]
        print_table(
            ["CERTIFICATE NAME", "TYPE", "STATUS", "VALID CERT", "NOT AFTER", "NOT BEFORE"], rows
        )


def _waypoint_name(destination: str | None) -> str:
    """``shop/waypoint.shop.svc.cluster.local`` -> ``waypoint`` (as istioctl shows it)."""
    if not destination:
        return "None"
    return destination.split("/", 1)[-1].split(".", 1)[0]


def _scope(policy: dict[str, Any]) -> str:
    if policy["scope"] == "GLOBAL":
        return "Global"
    if policy["scope"] == "NAMESPACE":
        return f"Namespace {policy['namespace']}"
    selector = ",".join(f"{k}={v}" for k, v in sorted((policy["selector"] or {}).items()))
    return f"WorkloadSelector {selector}"


cli.add_command(ztunnel_config, "zc")
cli.add_command(install_command)
cli.add_command(uninstall_command)

# ``ambient waypoint ...`` lives in its own module and registers itself on ``cli``.
from ambient.cli import waypoint as _waypoint  # noqa: E402

del _waypoint

# ``ambient analyze`` (istioctl analyze) lives in its own module.
from ambient.cli.analyze import analyze_command  # noqa: E402

cli.add_command(analyze_command)

# The distributed mode's commands register themselves on ``cli``.
from ambient.cli import distributed as _distributed  # noqa: E402

del _distributed


def main() -> None:
    """Run the ``ambient`` command line."""
    cli(prog_name="ambient")
