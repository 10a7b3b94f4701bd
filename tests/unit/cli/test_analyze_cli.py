"""``ambient analyze`` on folders: exit codes, istioctl's line format, JSON, namespace filter."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ambient.cli.main import cli

ROOT = Path(__file__).resolve().parents[3]

BROKEN = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: missing}}
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  selector: {app: orders}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: shop}
spec:
  hosts: [orders]
  http:
  - route: [{destination: {host: orders, subset: v2}}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: legacy, namespace: other}
spec: {host: orders.shop.svc.cluster.local}
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["analyze", *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_shop_example_is_clean() -> None:
    code, out, err = run(str(ROOT / "examples" / "shop"))
    assert (code, out) == (0, "")
    assert "No validation issues found when analyzing all namespaces" in err


def test_a_broken_folder_reports_each_problem_and_fails(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(BROKEN)
    code, out, _ = run(str(tmp_path))
    file = tmp_path / "mesh.yaml"
    assert code == 79
    assert out.splitlines() == [
        f"Error [IST0101] (Namespace shop {file}:1) metadata.labels[istio.io/use-waypoint]: "
        'Referenced waypoint not found: "shop/missing" (istio.io/use-waypoint); '
        "traffic goes direct, without its L7 policy",
        f"Error [IST0101] (VirtualService orders.shop {file}:12) "
        "spec.http[0].route[0].destination.subset: "
        'Referenced host+subset in destinationrule not found: "orders+v2"',
        f"Warning [IST0002] (DestinationRule legacy.other {file}:20) apiVersion: "
        "Deprecated: apiVersion networking.istio.io/v1beta1 is deprecated; use "
        "networking.istio.io/v1",
    ]


def test_namespace_filter_threshold_and_json(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(BROKEN)
    code, out, _ = run("-f", str(tmp_path), "-n", "other", "-o", "json")
    assert code == 0  # only a warning in namespace other
    assert [m["code"] for m in json.loads(out)] == ["IST0002"]
    code, _, _ = run("-f", str(tmp_path), "-n", "other", "--failure-threshold", "Warning")
    assert code == 79


def test_a_config_that_does_not_load_is_reported_as_schema_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 0}]}\n"
    )
    code, out, _ = run(str(tmp_path))
    assert code == 79
    assert out.startswith("Error [IST0106] (Service s ")
    assert "spec.ports[0].port: must be between 1 and 65535, got 0" in out
