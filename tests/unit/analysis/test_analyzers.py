"""Each analyzer on small manifests: the codes it reports, and silence on good input."""

from __future__ import annotations

import pytest

from ambient.analysis import analyze, in_namespace
from ambient.config import load_text

BASE = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  selector: {app: orders}
  ports: [{name: http, port: 8080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: orders-1, namespace: shop, labels: {app: orders, version: v1}}
spec:
  containers: [{name: app, command: ["true"]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"""


def codes(extra: str) -> list[str]:
    config = load_text(BASE + "---\n" + extra, "t.yaml")
    return [f"{m.type.code} {m.ref.kind if m.ref else ''}" for m in analyze(config)]


CASES = [
    ("clean", "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: shop}\n", []),
    (
        "use-waypoint names a missing waypoint",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop, "
        "labels: {istio.io/use-waypoint: nope}}\nspec: {ports: [{name: http, port: 80}]}\n",
        ["IST0101 Service"],
    ),
    (
        "waypoint-for mismatch",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop, labels: "
        "{istio.io/use-waypoint: waypoint}}\nspec: {containers: [{name: a, command: [x]}]}\n",
        ["AMB0001 Pod"],
    ),
    (
        "namespace bound to a waypoint but not enrolled",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: other, labels: "
        "{istio.io/use-waypoint: waypoint, istio.io/use-waypoint-namespace: shop}}\n",
        ["AMB0002 Namespace"],
    ),
    (
        "targetRefs to a missing Service",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: ap, namespace: shop}\nspec:\n  targetRefs: [{kind: Service, group: '', "
        "name: nope}]\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n",
        ["IST0101 AuthorizationPolicy"],
    ),
    (
        "targetRefs to a Service without waypoint",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: ap, namespace: shop}\nspec:\n  targetRefs: [{kind: Service, group: '', "
        "name: orders}]\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n",
        ["IST0167 AuthorizationPolicy"],
    ),
    (
        "targetRefs to a missing Gateway",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: ap, namespace: shop}\nspec:\n  targetRefs: [{kind: Gateway, group: "
        "gateway.networking.k8s.io, name: nope}]\n",
        ["IST0101 AuthorizationPolicy"],
    ),
    (
        "VirtualService host and subset",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, "
        "namespace: shop}\nspec:\n  hosts: [orders, ghost]\n  http:\n  - route:\n"
        "    - destination: {host: orders, subset: v9}\n",
        ["IST0101 VirtualService", "IST0101 VirtualService"],
    ),
    (
        "GRPCRoute parent and backend not found",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: g, "
        "namespace: shop}\nspec:\n  parentRefs: [{group: '', kind: Service, name: ghost}, "
        "{kind: Gateway, name: nowaypoint}]\n  rules:\n  - backendRefs: [{name: orders, "
        "port: 8080}, {name: missing, port: 8080}]\n",
        ["IST0101 GRPCRoute", "IST0101 GRPCRoute", "IST0101 GRPCRoute"],
    ),
    (
        "a GRPCRoute on a Service port an HTTPRoute takes first",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: a, "
        "namespace: shop}\nspec:\n  parentRefs: [{group: '', kind: Service, name: orders}]\n---\n"
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: b, "
        "namespace: shop}\nspec:\n  parentRefs: [{group: '', kind: Service, name: orders}]\n",
        ["AMB0005 GRPCRoute"],
    ),
    (
        "DestinationRule subset selecting no pod",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr, "
        "namespace: shop}\nspec:\n  host: orders\n  subsets: [{name: v1, labels: {version: v1}}, "
        "{name: v3, labels: {version: v3}}]\n",
        ["IST0127 DestinationRule"],
    ),
    (
        "AuthorizationPolicy selector matching nothing",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: ap, namespace: shop}\nspec:\n  selector: {matchLabels: {app: ghost}}\n"
        "  action: DENY\n  rules: [{from: [{source: {namespaces: [x]}}]}]\n",
        ["IST0127 AuthorizationPolicy"],
    ),
    (
        "L7 fields in a policy ztunnel enforces",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: ap, namespace: shop}\nspec:\n  rules: [{to: [{operation: "
        "{methods: [GET]}}]}]\n",
        ["AMB0003 AuthorizationPolicy"],
    ),
    (
        "STRICT while a workload is outside the mesh",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: legacy, namespace: other}\n"
        "spec: {containers: [{name: a, command: [x]}]}\n---\n"
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: strict, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n",
        ["AMB0004 PeerAuthentication"],
    ),
    (
        "deprecated apiVersion",
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: dr, "
        "namespace: shop}\nspec: {host: orders}\n",
        ["IST0002 DestinationRule"],
    ),
    (
        "port name outside Istio's convention",
        "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\n"
        "spec: {ports: [{name: postgres, port: 5432}]}\n",
        ["IST0118 Service"],
    ),
    (
        "two VirtualServices for one host",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, "
        "namespace: shop}\nspec: {hosts: [orders]}\n---\n"
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b, "
        "namespace: shop}\nspec: {hosts: [orders.shop.svc.cluster.local]}\n",
        ["IST0109 VirtualService", "IST0109 VirtualService"],
    ),
    (
        "two namespace-wide Telemetries",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: a, namespace: shop}\n"
        "spec: {accessLogging: [{disabled: true}]}\n---\n"
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: b, namespace: shop}\n"
        "spec: {accessLogging: [{disabled: false}]}\n",
        ["IST0160 Telemetry", "IST0160 Telemetry"],
    ),
    (
        "Telemetry only ztunnel would see",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: a, namespace: shop}\n"
        "spec: {selector: {matchLabels: {app: orders}}, accessLogging: [{disabled: true}]}\n",
        ["IST0167 Telemetry"],
    ),
    (
        "Telemetry with an unknown provider",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: a, namespace: shop}\n"
        "spec: {accessLogging: [{providers: [{name: otel}]}]}\n",
        ["IST0133 Telemetry", "IST0157 Telemetry"],
    ),
    (
        "Telemetry tracing to a provider of the mesh config",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
        "data: {mesh: 'extensionProviders: [{name: otel, opentelemetry: {service: c, port: 4317}}]'}\n"
        "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
        "metadata: {name: a, namespace: shop}\n"
        "spec: {tracing: [{providers: [{name: otel}], randomSamplingPercentage: 10}]}\n",
        [],
    ),
    (
        "Telemetry tracing to a provider nobody defines",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: a, namespace: shop}\n"
        "spec: {tracing: [{providers: [{name: jaeger}]}]}\n",
        ["IST0157 Telemetry"],
    ),
    (
        "fault with retries and timeout",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: f, namespace: shop}\n"
        "spec:\n  hosts: [orders]\n  http:\n  - route: [{destination: {host: orders}}]\n"
        "    fault: {abort: {httpStatus: 503, percentage: {value: 50}}}\n"
        "    retries: {attempts: 3}\n    timeout: 2s\n",
        ["AMB0006 VirtualService"],
    ),
    (
        "fault with retries turned off",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: f, namespace: shop}\n"
        "spec:\n  hosts: [orders]\n  http:\n  - route: [{destination: {host: orders}}]\n"
        "    fault: {abort: {httpStatus: 503, percentage: {value: 50}}}\n"
        "    retries: {attempts: 0}\n",
        [],
    ),
    (
        "retries and timeout without a fault",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: f, namespace: shop}\n"
        "spec:\n  hosts: [orders]\n  http:\n  - route: [{destination: {host: orders}}]\n"
        "    retries: {attempts: 3}\n    timeout: 2s\n",
        [],
    ),
]


@pytest.mark.parametrize(("extra", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_analyzer(extra: str, expected: list[str]) -> None:
    assert sorted(codes(extra)) == sorted(expected)


def test_message_line_names_kind_name_namespace_file_and_line() -> None:
    extra = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop, "
        "labels: {istio.io/use-waypoint: nope}}\nspec: {ports: [{name: http, port: 80}]}\n"
    )
    (message,) = analyze(load_text(BASE + "---\n" + extra, "t.yaml"))
    line = BASE.count("\n") + 2  # the document's first line, after the "---"
    assert str(message) == (
        f"Error [IST0101] (Service web.shop t.yaml:{line}) "
        "metadata.labels[istio.io/use-waypoint]: "
        'Referenced waypoint not found: "shop/nope" (istio.io/use-waypoint); '
        "traffic goes direct, without its L7 policy"
    )
    assert message.to_dict()["code"] == "IST0101"
    assert in_namespace(message, "shop") and not in_namespace(message, "other")


def test_fault_with_timeout_names_the_field_and_what_is_combined() -> None:
    extra = (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: f, "
        "namespace: shop}\nspec:\n  hosts: [orders]\n  http:\n"
        "  - route: [{destination: {host: orders}}]\n"
        "    fault: {delay: {fixedDelay: 1s, percentage: {value: 10}}}\n    timeout: 2s\n"
    )
    (message,) = analyze(load_text(BASE + "---\n" + extra, "t.yaml"))
    assert message.type.code == "AMB0006" and message.level.title == "Warning"
    assert message.path == "spec.http[0].fault"
    assert "combined with timeout on the same route" in message.text
