"""``ambient prometheus-config``: a Prometheus configuration for a running mesh.

Both forms are one job named ``kubernetes-pods`` with ``honor_labels``, as in Istio's
Prometheus addon, so that queries, alerts and dashboards written for Istio find the same
job and labels (``namespace``, ``pod``, ``node``, ``app`` and the pods' other labels):

- **folder mode** (:func:`folder_config`): ``http_sd_configs`` pointing at the control
  plane's monitoring port (``/prometheus/sd``, ``monitoring.discovery``), which lists the
  control plane, every node's ztunnel and every waypoint pod with those labels and their
  metrics path, re-read every ``refresh`` (new nodes and waypoints appear by themselves);
- **cluster mode** (:func:`cluster_config`): ``kubernetes_sd_configs`` (role ``pod``, with
  the kubeconfig's file, as a Prometheus outside the cluster needs) and the addon's
  relabelling: pods annotated ``prometheus.io/scrape: "true"`` are kept, scraped on their
  ``prometheus.io/port`` at ``prometheus.io/path``; pods not Running are dropped. Waypoint
  pods carry those annotations (``kube.waypoints``), as Istio's do.

The text is YAML a stock Prometheus (2.x, 3.x) loads as it is: ``prometheus
--config.file=FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ambient.monitoring.server import SD_PATH

__all__ = ["JOB", "cluster_config", "folder_config", "render"]

JOB = "kubernetes-pods"


def _globals(interval: str) -> dict[str, Any]:
    return {"scrape_interval": interval, "evaluation_interval": interval}


def folder_config(
    monitoring: str, *, interval: str = "15s", refresh: str | None = None
) -> dict[str, Any]:
    """The configuration for the mesh whose monitoring port is ``monitoring`` (``host:port``)."""
    return {
        "global": _globals(interval),
        "scrape_configs": [
            {
                "job_name": JOB,
                "honor_labels": True,
                "http_sd_configs": [
                    {
                        "url": f"http://{monitoring}{SD_PATH}",
                        "refresh_interval": refresh or interval,
                    }
                ],
            }
        ],
    }


def _relabel(source: list[str], **rule: Any) -> dict[str, Any]:
    return {"source_labels": source, **rule}


def cluster_config(kubeconfig: Path, *, interval: str = "15s") -> dict[str, Any]:
    """The configuration for the cluster of ``kubeconfig`` (its current context)."""
    annotation = "__meta_kubernetes_pod_annotation_prometheus_io_"
    relabel = [
        _relabel([f"{annotation}scrape"], action="keep", regex="true"),
        _relabel(
            [f"{annotation}scheme"], action="replace", regex="(https?)", target_label="__scheme__"
        ),
        _relabel(
            [f"{annotation}path"], action="replace", regex="(.+)", target_label="__metrics_path__"
        ),
        # The pod's IP with the annotated port (IPv6 in brackets).
        _relabel(
            [f"{annotation}port", "__meta_kubernetes_pod_ip"],
            action="replace",
            regex="(\\d+);(([A-Fa-f0-9]{1,4}::?){1,7}[A-Fa-f0-9]{1,4})",
            replacement="[$2]:$1",
            target_label="__address__",
        ),
        _relabel(
            [f"{annotation}port", "__meta_kubernetes_pod_ip"],
            action="replace",
            regex="(\\d+);((([0-9]+?)(\\.|$)){4})",
            replacement="$2:$1",
            target_label="__address__",
        ),
        {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
        _relabel(["__meta_kubernetes_namespace"], action="replace", target_label="namespace"),
        _relabel(["__meta_kubernetes_pod_name"], action="replace", target_label="pod"),
        _relabel(
            ["__meta_kubernetes_pod_phase"],
            action="drop",
            regex="Pending|Succeeded|Failed|Completed",
        ),
        _relabel(["__meta_kubernetes_pod_node_name"], action="replace", target_label="node"),
    ]
    return {
        "global": _globals(interval),
        "scrape_configs": [
            {
                "job_name": JOB,
                "honor_labels": True,
                "kubernetes_sd_configs": [
                    {"role": "pod", "kubeconfig_file": str(kubeconfig.absolute())}
                ],
                "relabel_configs": relabel,
            }
        ],
    }


def render(config: dict[str, Any], comment: str) -> str:
    """``config`` as YAML, after ``comment`` (one ``#`` line per line of it)."""
    head = "".join(f"# {line}\n" if line else "#\n" for line in comment.splitlines())
    return head + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
