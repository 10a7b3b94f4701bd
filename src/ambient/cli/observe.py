"""Observing a running mesh: ``prometheus-config`` (and ``dashboard``, ``cli.dashboard``).

``ambient prometheus-config`` prints a Prometheus configuration for the mesh the command
line names (``monitoring.scrapeconfig``): in folder mode an ``http_sd_configs`` job fed by
the control plane's monitoring port (it must answer: the command checks it), on a
cluster (``--kubeconfig``) a ``kubernetes_sd_configs`` job with Istio's relabelling, plus
the control plane's own port when its heartbeat names one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from ambient.cli.app import CONTEXT, call, fail, parse_duration, target, target_options

__all__ = ["prometheus_config"]


def _interval(text: str) -> str:
    parse_duration(text)  # the same syntax as Prometheus's durations (30s, 1m, 1h30m)
    return text


def check_sd(url: str) -> list[dict[str, Any]]:
    """The target groups ``url`` serves; exits naming the URL when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            groups = json.loads(answer.read())
    except (OSError, urllib.error.URLError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(f"the control plane's monitoring port does not answer at {url}: {reason}")
    if not isinstance(groups, list):
        fail(f"{url} did not answer a list of target groups")
    return groups


def _folder(ctx: click.Context, interval: str) -> str:
    from ambient.monitoring.scrapeconfig import folder_config, render
    from ambient.monitoring.server import SD_PATH

    status = call(ctx, "GET", "/status")
    monitoring = status.get("monitoring")
    if not monitoring:
        fail("this mesh serves no monitoring port (it was started by an older ambient)")
    groups = check_sd(f"http://{monitoring}{SD_PATH}")
    comment = (
        f"Prometheus configuration for the ambient mesh of {status.get('config_dir', '?')}.\n"
        f"Targets come from the control plane's monitoring port ({monitoring}), {len(groups)} "
        "now;\nnew nodes and waypoints appear at the next refresh. Run:\n"
        "  prometheus --config.file=THIS_FILE --storage.tsdb.path=DIR"
    )
    return render(folder_config(monitoring, interval=interval), comment)


def _cluster(ctx: click.Context, interval: str, discovery: str) -> str:
    from ambient.kube.api import ClusterTarget, KubeError, load_config
    from ambient.monitoring.scrapeconfig import cluster_config, folder_config, render
    from ambient.monitoring.server import SD_PATH

    where = target(ctx)
    assert isinstance(where, ClusterTarget)
    monitoring = _cluster_monitoring(where)
    if discovery == "http":
        if not monitoring:
            fail("the cluster's control plane is not running (or serves no monitoring port)")
        groups = check_sd(f"http://{monitoring}{SD_PATH}")
        comment = (
            f"Prometheus configuration for the cluster of {where.describe()}: targets from "
            f"its control plane's monitoring port ({monitoring}), {len(groups)} now."
        )
        return render(folder_config(monitoring, interval=interval), comment)
    try:
        wanted = load_config(where)
        if wanted.fname is None:
            fail("Prometheus needs a kubeconfig file: give --kubeconfig or set KUBECONFIG")
        path = Path(wanted.fname)
        current = load_config(ClusterTarget(path))
    except KubeError as err:
        fail(str(err))
    if current.context_name != wanted.context_name:
        fail(
            f"Prometheus uses the current context of {path} ({current.context_name}), not "
            f"{wanted.context_name}: write a kubeconfig whose current context is the cluster's"
        )
    config = cluster_config(path, interval=interval)
    if monitoring:
        config["scrape_configs"].append(
            {
                "job_name": "controlplane",
                "static_configs": [{"targets": [monitoring], "labels": {"app": "istiod"}}],
            }
        )
    comment = (
        f"Prometheus configuration for the cluster of {path} ({current.context_name}):\n"
        "pods annotated prometheus.io/scrape (ztunnels, waypoints), as Istio's addon scrapes "
        "them"
        + (f";\nthe control plane's own metrics at {monitoring}." if monitoring else ".")
        + "\nKubernetes discovery needs a Prometheus built with it (upstream's releases; "
        "Debian's\npackage has none: use --discovery http with it)."
    )
    return render(config, comment)


def _cluster_monitoring(where: Any) -> str | None:
    """The control plane's monitoring address from its heartbeat, if it runs and has one."""
    from ambient.cli import cluster
    from ambient.kube.heartbeat import read_status

    status = cluster.run(where, read_status)
    if not status or not status.get("alive"):
        return None
    address = status.get("monitoring_address")
    return address if isinstance(address, str) else None


@click.command("prometheus-config", context_settings=CONTEXT)
@target_options
@click.option(
    "--scrape-interval",
    default="15s",
    show_default=True,
    callback=lambda _c, _p, v: _interval(v),
    help="How often Prometheus scrapes (and, in folder mode, refreshes its target list).",
)
@click.option(
    "--discovery",
    type=click.Choice(["kubernetes", "http"]),
    default=None,
    help="How Prometheus finds targets: Kubernetes pod discovery (the default on a cluster) "
    "or HTTP discovery from the control plane's monitoring port (the only one in folder mode).",
)
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the configuration to this file instead of standard output.",
)
@click.pass_context
def prometheus_config(
    ctx: click.Context,
    state_dir: str | None,
    scrape_interval: str,
    discovery: str | None,
    output: Path | None,
) -> None:
    """Print a Prometheus configuration for the running mesh (a stock Prometheus uses it as is).

    In folder mode it discovers targets over HTTP from the control plane's monitoring port
    (15014): the control plane, every ztunnel (15020) and every waypoint (15020), labelled
    as Istio's Prometheus addon labels pods (namespace, pod, node, app, ...). On a
    cluster (--kubeconfig) it uses Kubernetes discovery of pods annotated
    prometheus.io/scrape, as Istio's addon does (--discovery http: the control plane's
    list instead, for a Prometheus built without Kubernetes discovery, such as Debian's).

    \b
    Example:
      ambient prometheus-config > prom.yml
      prometheus --config.file=prom.yml --storage.tsdb.path=/tmp/prom
    """
    if target(ctx) is not None:
        text = _cluster(ctx, scrape_interval, discovery or "kubernetes")
    elif discovery == "kubernetes":
        fail("--discovery kubernetes needs a cluster (--kubeconfig)")
    else:
        text = _folder(ctx, scrape_interval)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror}")
