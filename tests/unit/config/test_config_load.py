"""Good paths: a realistic shop mesh, folders, Lists, warnings, registry plug-ins."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ambient.config import (
    DEFAULT_REGISTRY,
    ConfigError,
    ConfigSet,
    Container,
    ContainerPort,
    Deployment,
    EnvVar,
    FrozenMap,
    GenericResource,
    LabelSelector,
    ObjectMeta,
    Origin,
    Pod,
    Ref,
    Service,
    ServiceEntry,
    ServiceEntryPort,
    ServicePort,
    WorkloadEntry,
    WorkloadEntrySpec,
    check_references,
    find_files,
    load_paths,
    load_text,
    resource_schema,
)
from ambient.config.registry import Registry
from ambient.config.schema import Custom, Obj, Str, req

SHOP = (Path(__file__).parent / "shop.yaml").read_text()


@pytest.fixture
def shop() -> ConfigSet:
    return load_text(SHOP, "shop.yaml")


def test_shop_objects(shop: ConfigSet) -> None:
    kinds = sorted({obj.kind for obj in shop})
    assert kinds == [
        "AuthorizationPolicy",
        "Deployment",
        "Gateway",
        "Namespace",
        "Pod",
        "Service",
        "ServiceAccount",
        "ServiceEntry",
        "WorkloadEntry",
    ]
    assert len(shop) == 13
    assert shop.warnings == ()


def test_shop_namespace(shop: ConfigSet) -> None:
    names = [ns.meta.name for ns in shop.namespaces()]
    assert names == ["default", "shop"]
    namespace = shop.namespace("shop")
    assert namespace is not None
    assert namespace.meta == ObjectMeta(
        "shop", "", FrozenMap({"istio.io/dataplane-mode": "ambient"})
    )
    assert shop.namespace("nowhere") is None


def test_shop_deployments(shop: ConfigSet) -> None:
    deployments = {d.meta.name: d for d in shop.deployments()}
    assert sorted(deployments) == ["orders-v1", "orders-v2", "web"]
    web = deployments["web"]
    assert web.api_version == "apps/v1"
    assert web.meta.labels == {"app": "web"}
    assert web.spec.replicas == 2
    assert web.spec.selector == LabelSelector(FrozenMap({"app": "web"}))
    pod = web.spec.template.spec
    assert pod.service_account_name == "web"
    assert pod.node_name == "node-1"
    assert pod.containers == (
        Container(
            name="web",
            image="python:3.11-slim",
            command=("python3", "-m", "shop.web"),
            args=("--port", "8080"),
            env=(
                EnvVar("ORDERS_URL", "http://orders:8080"),
                EnvVar("MY_IP", field_path="status.podIP"),
            ),
            ports=(ContainerPort(8080, "http"),),
        ),
    )
    assert web.spec.template.meta.labels == {"app": "web", "version": "v1"}
    assert deployments["orders-v1"].spec.template.spec.containers[0].working_dir == "/srv"
    v2 = deployments["orders-v2"]
    assert v2.spec.template.spec.node_name == "node-2"
    assert v2.spec.selector.matches({"app": "orders", "version": "v2"})
    assert not v2.spec.selector.matches({"app": "orders", "version": "v1"})


def test_shop_services(shop: ConfigSet) -> None:
    web = shop.get("Service", "shop", "web")
    assert isinstance(web, Service)
    assert web.spec.ports == (ServicePort(80, "http", "TCP", "http", "http"),)
    assert web.spec.cluster_ip is None
    assert not web.spec.headless
    orders = shop.get("Service", "shop", "orders")
    assert isinstance(orders, Service)
    assert orders.meta.labels["istio.io/use-waypoint"] == "waypoint"
    assert orders.spec.cluster_ip == "127.10.0.20"
    assert orders.spec.ports == (
        ServicePort(8080, 8080, "TCP", "http"),
        ServicePort(9090, 9091, "TCP", "grpc"),
    )


def test_shop_pod(shop: ConfigSet) -> None:
    (probe,) = shop.pods()
    assert probe.meta == ObjectMeta("probe", "shop")
    assert probe.spec.service_account_name == "default"
    assert probe.spec.node_name == "node-1"
    assert probe.status.pod_ip == "127.10.1.5"
    assert probe.status.phase == "Running"


def test_shop_workload_and_service_entries(shop: ConfigSet) -> None:
    (vm,) = shop.workload_entries()
    assert vm.api_version == "networking.istio.io/v1"
    assert vm.spec == WorkloadEntrySpec(
        address="192.168.7.21",
        ports=FrozenMap({"http": 8080}),
        labels=FrozenMap({"app": "orders", "version": "vm"}),
        network="vm-network",
        locality="eu-west/zone-a",
        weight=10,
        service_account="orders",
    )
    (payments,) = shop.service_entries()
    assert payments.spec.hosts == ("api.payments.example",)
    assert payments.spec.addresses == ("240.240.0.1",)
    assert payments.spec.resolution == "DNS"
    assert payments.spec.location == "MESH_EXTERNAL"
    assert payments.spec.ports == (ServiceEntryPort(443, "HTTPS", "https", 8443),)


def test_shop_generic_kinds(shop: ConfigSet) -> None:
    (policy,) = shop.by_kind("AuthorizationPolicy")
    assert isinstance(policy, GenericResource)
    assert policy.api_version == "security.istio.io/v1"
    assert policy.meta.namespace == "shop"
    assert policy.spec["action"] == "ALLOW"
    assert policy.spec["rules"] == (
        {"from": ({"source": {"principals": ("cluster.local/ns/shop/sa/web",)}},)},
    )
    hash(policy)  # deep-frozen
    (gateway,) = shop.by_kind("Gateway")
    assert gateway.meta.labels == {"istio.io/waypoint-for": "service"}


def test_shop_origins_and_refs(shop: ConfigSet) -> None:
    web = shop.get("Deployment", "shop", "web")
    assert web is not None
    assert shop.origin(web) == Origin("shop.yaml", 4)
    assert str(shop.origin(web)) == "shop.yaml:4"
    assert Ref.of(web) == Ref("Deployment", "shop", "web")
    assert str(Ref("Namespace", "", "shop")) == "Namespace shop"
    assert shop.of_type(Deployment) == shop.deployments()
    assert shop.service_accounts()[0].meta.name == "orders"


def test_defaults_for_a_minimal_pod() -> None:
    config = load_text(
        "kind: Pod\napiVersion: v1\nmetadata: {name: p}\nspec: {containers: [{name: c, command: [run]}]}\n"
    )
    (pod,) = config.pods()
    assert pod == Pod(ObjectMeta("p"), pod.spec)
    assert pod.meta.namespace == "default"
    assert pod.spec.containers == (Container("c", command=("run",)),)
    assert pod.status.pod_ip is None
    assert config.origin(pod) == Origin("<string>", 1)


def test_deprecated_service_account_field() -> None:
    text = (
        "kind: Pod\napiVersion: v1\nmetadata: {name: p}\n"
        "spec: {serviceAccount: legacy, containers: [{name: c, command: [run]}]}\n---\n"
        "kind: ServiceAccount\napiVersion: v1\nmetadata: {name: legacy}\n"
    )
    (pod,) = load_text(text).pods()
    assert pod.spec.service_account_name == "legacy"


def test_headless_service_needs_no_ports() -> None:
    config = load_text(
        "kind: Service\napiVersion: v1\nmetadata: {name: db}\nspec: {clusterIP: None}\n"
    )
    (service,) = config.services()
    assert service.spec.headless
    with pytest.raises(ConfigError) as info:
        load_text("kind: Service\napiVersion: v1\nmetadata: {name: db}\nspec: {}\n", "s.yaml")
    assert str(info.value) == (
        "s.yaml:1: Service/db: spec.ports: missing required field "
        "(only a headless Service may have no ports)"
    )


def test_warnings_do_not_fail_the_load() -> None:
    text = (
        "kind: Service\napiVersion: v1\nmetadata: {name: web}\n"
        "spec: {type: LoadBalancer, ports: [{port: 80, nodePort: 30080}]}\n---\n"
        "kind: Namespace\napiVersion: v1\n"
        "metadata: {name: shop, labels: {istio.io/dataplane-mode: ambiant}}\n"
    )
    config = load_text(text, "w.yaml")
    assert [str(w) for w in config.warnings] == [
        "w.yaml:1: Service/web: spec.type: LoadBalancer is treated as ClusterIP: no node port "
        "or external load balancer is provisioned locally",
        "w.yaml:2: Namespace/shop: metadata.labels[istio.io/dataplane-mode]: unknown value "
        "'ambiant' (expected 'ambient' or 'none'): not enrolled in the mesh",
    ]
    with pytest.raises(ConfigError) as info:
        load_text(text + "---\n[]\n", "w.yaml")
    assert len(info.value.warnings) == 2


def test_list_kind() -> None:
    text = """\
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: a}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: b}}
"""
    config = load_text(text, "l.yaml")
    assert [sa.meta.name for sa in config.service_accounts()] == ["a", "b"]
    second = config.get("ServiceAccount", "default", "b")
    assert second is not None
    assert str(config.origin(second)) == "l.yaml:1 (items[1])"
    typed = text.replace("kind: List", "kind: ServiceAccountList")
    assert len(load_text(typed)) == 2


def test_list_problems() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("apiVersion: v1\nkind: List\nitem: []\n", "l.yaml")
    assert [str(p) for p in info.value.problems] == [
        "l.yaml:1: List: item: unknown field (a List has apiVersion, kind, metadata and items)",
        "l.yaml:1: List: items: missing required field",
    ]
    with pytest.raises(ConfigError) as info:
        load_text(
            "apiVersion: v2\nkind: List\nitems: [{apiVersion: v1, kind: List, items: []}]\n",
            "l.yaml",
        )
    assert [str(p) for p in info.value.problems] == [
        "l.yaml:1: List: apiVersion: a List has apiVersion v1, got 'v2'",
        "l.yaml:1: List: items[0].kind: a List item cannot itself be a List",
    ]


def test_duplicates_across_files_name_both_places(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\n")
    (tmp_path / "b.yaml").write_text(
        "---\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_paths([tmp_path])
    assert str(info.value) == (
        f"{tmp_path}/b.yaml:2: ServiceAccount/x: metadata.name: duplicate ServiceAccount "
        f"default/x: already defined at {tmp_path}/a.yaml:1"
    )


def test_folder_walk(tmp_path: Path) -> None:
    for name in [
        "b.yaml",
        "a.yml",
        "sub/c.yaml",
        "sub/deeper/d.YAML",
        ".hidden.yaml",
        "notes.txt",
        ".git/e.yaml",
        "cacerts/root-cert.pem",
        "cacerts/x.yaml",
        "sub/cacerts/y.yaml",
    ]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: sa-{len(name)}}}\n"
        )
    (tmp_path / "loop").symlink_to(tmp_path)
    files, problems = find_files([tmp_path])
    assert problems == []
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "a.yml",
        "b.yaml",
        "sub/c.yaml",
        "sub/deeper/d.YAML",
    ]


def test_explicit_files_and_missing_paths(tmp_path: Path) -> None:
    manifest = tmp_path / "shop.txt"
    manifest.write_text(SHOP)
    config = load_paths([manifest, manifest])  # the same file twice is read once
    assert len(config) == 13
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError) as info:
        load_paths([tmp_path / "nope.yaml", empty])
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path}/nope.yaml: no such file or folder",
        f"{empty}: no *.yaml or *.yml files in this folder",
    ]


def test_unreadable_and_binary_files(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"kind: \xff\xfe\n")
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"kind: Pod\n  \x00\n")
    with pytest.raises(ConfigError) as info:
        load_paths([tmp_path])
    assert [str(p) for p in info.value.problems] == [
        f"{binary}: not UTF-8 text (bad byte at offset 6)",
        f"{nul}:2:3: invalid YAML: unacceptable character #x0000: special characters are not allowed",
    ]


def test_check_refs_can_be_deferred() -> None:
    pod = "kind: Pod\napiVersion: v1\nmetadata: {name: p}\nspec: {serviceAccountName: sa, containers: [{name: c, command: [run]}]}\n"
    config = load_text(pod, "p.yaml", check_refs=False)
    assert [str(p) for p in check_references(config)] == [
        "p.yaml:1: Pod/p: spec.serviceAccountName: ServiceAccount default/sa is not declared; "
        "add it, or omit serviceAccountName to run as 'default'"
    ]
    assert check_references(config, [Ref("ServiceAccount", "default", "sa")]) == []


def test_broken_service_account_does_not_cascade() -> None:
    text = (
        "kind: ServiceAccount\napiVersion: v1\nmetadata: {name: sa, labels: {a: 1}}\n---\n"
        "kind: Pod\napiVersion: v1\nmetadata: {name: p}\nspec: {serviceAccountName: sa, containers: [{name: c, command: [run]}]}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_text(text, "p.yaml")
    assert [p.kind for p in info.value.problems] == ["ServiceAccount"]


@dataclass(frozen=True)
class PolicySpec:
    action: str


@dataclass(frozen=True)
class Policy:
    meta: ObjectMeta
    spec: PolicySpec
    api_version: str = "example.com/v1"
    kind: str = field(default="Widget", init=False)


POLICY = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: a}\nspec: {action: DENY}\n"


def _with_generic_widget() -> Registry:
    registry = DEFAULT_REGISTRY.copy()
    registry.register_generic(["example.com/v1"], "Widget")
    return registry


def test_register_a_strict_kind() -> None:
    base = _with_generic_widget()
    registry = base.copy()
    node = resource_schema(Policy, Obj(PolicySpec, {"action": req(Str())}), spec_required=True)
    registry.register(["example.com/v1"], "Widget", node)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(["example.com/v1"], "Widget", node)
    (policy,) = load_text(POLICY, registry=registry)
    assert policy == Policy(ObjectMeta("a"), PolicySpec("DENY"))
    with pytest.raises(ConfigError) as info:
        load_text(POLICY.replace("action", "acton"), "p.yaml", registry=registry)
    assert [str(p) for p in info.value.problems] == [
        "p.yaml:1: Widget/a: spec.acton: unknown field (did you mean 'action'?)",
        "p.yaml:1: Widget/a: spec.action: missing required field",
    ]
    with pytest.raises(ConfigError) as info:
        load_text(POLICY.replace("example.com/v1", "example.com/v2"), "p.yaml", registry=registry)
    assert "Widget is served by example.com/v1, not" in str(info.value)
    # the registry it was copied from is untouched
    assert isinstance(next(iter(load_text(POLICY, registry=base))), GenericResource)


def test_custom_node_adapts_other_readers() -> None:
    class ReaderError(ValueError):
        def __init__(self, path: str, message: str) -> None:
            super().__init__(f"{path}: {message}")
            self.path = path
            self.message = message

    def read(value: object) -> PolicySpec:
        if not isinstance(value, dict) or value.get("action") not in ("ALLOW", "DENY"):
            raise ReaderError("action", "must be ALLOW or DENY")
        return PolicySpec(value["action"])

    registry = _with_generic_widget()
    registry.register(
        ["example.com/v1"],
        "Widget",
        resource_schema(Policy, Custom(read), spec_required=True),
    )
    with pytest.raises(ConfigError) as info:
        load_text(POLICY.replace("DENY", "AUDIT"), "p.yaml", registry=registry)
    assert str(info.value) == "p.yaml:1: Widget/a: spec.action: must be ALLOW or DENY"


def test_kinds_share_the_resource_protocol(shop: ConfigSet) -> None:
    for obj in shop:
        assert isinstance(obj.meta, ObjectMeta)
        assert obj.kind in type(obj).__name__ or isinstance(obj, GenericResource)
    assert isinstance(shop.get("WorkloadEntry", "shop", "legacy-vm"), WorkloadEntry)
    assert isinstance(shop.get("ServiceEntry", "shop", "payments"), ServiceEntry)
