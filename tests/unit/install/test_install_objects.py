"""What ambient install would apply: the CRDs' selection and the mesh's own objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ambient.cli.main import cli
from ambient.install.crds import GATEWAY_API, ISTIO_API, CrdError, ensure_crds, load_crds
from ambient.install.manifests import mesh_objects


@pytest.fixture(scope="module")
def crds() -> list[dict[str, Any]]:
    """Fetched by `make crds` (setup time); fetched here if that did not run."""
    return load_crds(ensure_crds())


def test_crds_are_the_three_istio_groups_and_gateway_apis_standard_channel(
    crds: list[dict[str, Any]],
) -> None:
    names = {str(c["metadata"]["name"]) for c in crds if c["kind"] == "CustomResourceDefinition"}
    for expected in (
        "authorizationpolicies.security.istio.io",
        "peerauthentications.security.istio.io",
        "requestauthentications.security.istio.io",
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "serviceentries.networking.istio.io",
        "workloadentries.networking.istio.io",
        "telemetries.telemetry.istio.io",
        "gatewayclasses.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io",
        "grpcroutes.gateway.networking.k8s.io",
        "referencegrants.gateway.networking.k8s.io",
    ):
        assert expected in names
    assert not [n for n in names if n.endswith("extensions.istio.io")]
    channels = {
        c["metadata"].get("annotations", {}).get("gateway.networking.k8s.io/channel")
        for c in crds
        if str(c["metadata"]["name"]).endswith("gateway.networking.k8s.io")
    }
    assert channels == {"standard"}


def test_a_copied_crd_folder_is_used_and_a_bad_one_refused(
    crds: list[dict[str, Any]], tmp_path: Path
) -> None:
    with pytest.raises(CrdError, match=r"does not hold the CRDs of istio\.io/api"):
        ensure_crds(tmp_path)
    source = ensure_crds()
    for pin in (ISTIO_API, GATEWAY_API):
        (tmp_path / pin.folder).symlink_to(source / pin.folder)
    assert load_crds(ensure_crds(tmp_path)) == crds


def _by(kind: str, name: str) -> dict[str, Any]:
    return next(o for o in mesh_objects() if o["kind"] == kind and o["metadata"]["name"] == name)


def test_no_secrets_and_nothing_cluster_admin() -> None:
    for obj in mesh_objects():
        for rule in obj.get("rules", []):
            assert "secrets" not in rule["resources"]
            assert "*" not in rule["verbs"]
            if rule["resources"] == ["*"]:
                assert rule["verbs"] == ["get", "list", "watch"]  # only reading whole groups


def test_ztunnel_may_only_mint_its_own_token() -> None:
    (rule,) = _by("Role", "ambient-ztunnel")["rules"]
    assert rule == {
        "apiGroups": [""],
        "resources": ["serviceaccounts/token"],
        "resourceNames": ["ztunnel"],
        "verbs": ["create"],
    }


def test_dry_run_prints_every_object_as_yaml(crds: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(cli, ["install", "--dry-run"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.load_all(result.stdout, Loader=yaml.CSafeLoader))
    assert len(docs) == len(crds) + len(mesh_objects())
    assert docs[-1]["kind"] == "GatewayClass"
    assert docs[-1]["spec"]["controllerName"] == "istio.io/mesh-controller"


def test_unreachable_or_missing_cluster_is_a_clear_error(tmp_path: Path) -> None:
    missing = CliRunner().invoke(cli, ["install", "--kubeconfig", str(tmp_path / "nope")])
    assert missing.exit_code == 1
    assert "cannot load" in missing.output and "nope" in missing.output
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    down = CliRunner().invoke(cli, ["install", "--kubeconfig", str(kubeconfig)])
    assert down.exit_code == 1
    assert "cannot reach the API server" in down.output
    assert "Traceback" not in down.output
    other = CliRunner().invoke(
        cli, ["uninstall", "--kubeconfig", str(kubeconfig), "--context", "x"]
    )
    assert other.exit_code == 1 and "Context 'x' not found" in other.output
