"""``ambient prometheus-config``'s output is a configuration Prometheus itself accepts
(``promtool check config``, Debian's prometheus package), in both forms."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ambient.monitoring.scrapeconfig import cluster_config, folder_config, render

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: Debian's prometheus package (make system-deps)"
)


def check(path: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )


def test_folder_form_discovers_over_http_from_the_monitoring_port() -> None:
    config = folder_config("127.1.0.254:15014", interval="5s")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "kubernetes-pods" and job["honor_labels"] is True
    assert job["http_sd_configs"] == [
        {"url": "http://127.1.0.254:15014/prometheus/sd", "refresh_interval": "5s"}
    ]
    text = render(config, "first line\n\nthird")
    assert text.startswith("# first line\n#\n# third\n")
    assert yaml.safe_load(text) == config


def _kubeconfig(path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_cluster_form_discovers_pods_with_the_kubeconfig_file(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig")
    (job,) = cluster_config(kubeconfig)["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "kubeconfig_file": str(kubeconfig)}]
    targets = [r.get("target_label") for r in job["relabel_configs"]]
    assert {"namespace", "pod", "node", "__address__", "__metrics_path__"} <= set(targets)


@needs_promtool
def test_promtool_accepts_both_forms(tmp_path: Path) -> None:
    folder = tmp_path / "folder.yml"
    folder.write_text(render(folder_config("127.1.0.254:15014"), "folder mode"))
    result = check(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    # Debian's Prometheus is built without Kubernetes discovery: the relabelling (what is
    # ours) is checked under a static job, the discovery block is upstream's syntax.
    config = cluster_config(_kubeconfig(tmp_path / "kubeconfig"))
    job = config["scrape_configs"][0]
    job["static_configs"] = [{"targets": ["127.0.0.1:1"]}]
    del job["kubernetes_sd_configs"]
    cluster = tmp_path / "cluster.yml"
    cluster.write_text(render(config, "cluster mode"))
    result = check(cluster)
    assert result.returncode == 0, result.stdout + result.stderr
    # The check is real: a broken relabelling is refused.
    job["relabel_configs"][0]["action"] = "keepit"
    cluster.write_text(render(config, "broken"))
    assert check(cluster).returncode != 0
