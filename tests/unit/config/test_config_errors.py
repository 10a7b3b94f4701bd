"""Bad manifests: each yields exactly the one-line problems a user can act on."""

from __future__ import annotations

import textwrap

import pytest

from ambient.config import ConfigError, Problem, load_text

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: probe
spec:
  containers:
  - name: app
    command: [sleep, infinity]
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        command: [web]
        ports: [{containerPort: 8080, name: http}]
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, name: http}]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(textwrap.dedent(text), "bad.yaml")
    lines = [str(p) for p in info.value.problems]
    assert str(info.value) == "\n".join(lines)
    return lines


CASES: list[tuple[str, str, list[str]]] = [
    (
        "unknown-kind",
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: settings}\n",
        [
            "bad.yaml:1: LimitRange/settings: kind: unknown kind 'LimitRange'; supported kinds: "
            "AuthorizationPolicy, ConfigMap, Deployment, DestinationRule, GRPCRoute, Gateway, HTTPRoute, Namespace, "
            "PeerAuthentication, Pod, RequestAuthentication, Service, ServiceAccount, ServiceEntry, "
            "Telemetry, VirtualService, WorkloadEntry, List"
        ],
    ),
    (
        "misspelled-kind",
        DEPLOYMENT.replace("kind: Deployment", "kind: Deploymnet"),
        [
            "bad.yaml:1: Deploymnet/web: kind: unknown kind 'Deploymnet' (did you mean 'Deployment'?)"
        ],
    ),
    (
        "kind-not-string",
        "apiVersion: v1\nkind: 5\nmetadata: {name: x}\n",
        ["bad.yaml:1: kind: expected a string, got 5"],
    ),
    (
        "missing-api-version",
        POD.replace("apiVersion: v1\n", ""),
        ["bad.yaml:1: Pod/probe: apiVersion: missing required field"],
    ),
    (
        "wrong-api-version",
        DEPLOYMENT.replace("apps/v1", "v1"),
        ["bad.yaml:1: Deployment/web: apiVersion: Deployment is served by apps/v1, not 'v1'"],
    ),
    (
        "wrong-api-version-istio",
        "apiVersion: networking.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny}\n",
        [
            "bad.yaml:1: AuthorizationPolicy/deny: apiVersion: AuthorizationPolicy is served by "
            "security.istio.io/v1 or security.istio.io/v1beta1, not 'networking.istio.io/v1'"
        ],
    ),
    (
        "unknown-top-level-field",
        POD.replace("spec:", "spek:"),
        [
            "bad.yaml:1: Pod/probe: spek: unknown field (did you mean 'spec'?)",
            "bad.yaml:1: Pod/probe: spec: missing required field",
        ],
    ),
    (
        "unknown-spec-field",
        DEPLOYMENT.replace("replicas: 2", "replica: 2"),
        ["bad.yaml:1: Deployment/web: spec.replica: unknown field (did you mean 'replicas'?)"],
    ),
    (
        "unknown-container-field",
        POD.replace("command:", "comand:"),
        [
            "bad.yaml:1: Pod/probe: spec.containers[0].comand: unknown field "
            "(did you mean 'command'?)"
        ],
    ),
    (
        "unknown-pod-status-field",
        POD + "status: {podIP: 10.0.0.7, ip: 10.0.0.7}\n",
        ["bad.yaml:1: Pod/probe: status.ip: unknown field"],
    ),
    (
        "replicas-not-integer",
        DEPLOYMENT.replace("replicas: 2", "replicas: two"),
        ["bad.yaml:1: Deployment/web: spec.replicas: expected an integer, got 'two'"],
    ),
    (
        "replicas-negative",
        DEPLOYMENT.replace("replicas: 2", "replicas: -1"),
        ["bad.yaml:1: Deployment/web: spec.replicas: must be between 0 and 2147483647, got -1"],
    ),
    (
        "missing-containers",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: probe}\nspec: {nodeName: node-1}\n",
        ["bad.yaml:1: Pod/probe: spec.containers: missing required field"],
    ),
    (
        "empty-containers",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: probe}\nspec: {containers: []}\n",
        ["bad.yaml:1: Pod/probe: spec.containers: must not be empty"],
    ),
    (
        "missing-container-name",
        POD.replace("- name: app\n    command", "- command"),
        ["bad.yaml:1: Pod/probe: spec.containers[0].name: missing required field"],
    ),
    (
        "missing-object-name",
        POD.replace("  name: probe\n", "  namespace: shop\n"),
        ["bad.yaml:1: Pod: metadata.name: missing required field"],
    ),
    (
        "metadata-not-mapping",
        "apiVersion: v1\nkind: Namespace\nmetadata: shop\n",
        ["bad.yaml:1: Namespace: metadata: expected a mapping, got 'shop'"],
    ),
    (
        "bad-name",
        POD.replace("name: probe", "name: Probe_1"),
        [
            "bad.yaml:1: Pod/Probe_1: metadata.name: invalid name 'Probe_1': must be a lowercase "
            "RFC 1123 subdomain (at most 253 lowercase letters, digits, '-' and '.', starting "
            "and ending with a letter or digit)"
        ],
    ),
    (
        "service-name-starts-with-digit",
        SERVICE.replace("name: web}", "name: 1web}"),
        [
            "bad.yaml:1: Service/1web: metadata.name: invalid name '1web': must be an RFC 1035 "
            "label (at most 63 lowercase letters, digits and '-', starting with a letter and "
            "ending with a letter or digit)"
        ],
    ),
    (
        "bad-namespace-name",
        SERVICE.replace("name: web}", "name: web, namespace: Shop}"),
        [
            "bad.yaml:1: Service/web: metadata.namespace: invalid name 'Shop': must be a "
            "lowercase RFC 1123 label (at most 63 lowercase letters, digits and '-', starting "
            "and ending with a letter or digit)"
        ],
    ),
    (
        "namespace-on-cluster-scoped",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, namespace: shop}\n",
        [
            "bad.yaml:1: Namespace/shop: metadata.namespace: not supported: this kind is "
            "cluster-scoped; remove metadata.namespace"
        ],
    ),
    (
        "container-port-zero",
        DEPLOYMENT.replace("containerPort: 8080", "containerPort: 0"),
        [
            "bad.yaml:1: Deployment/web: spec.template.spec.containers[0].ports[0].containerPort: "
            "must be between 1 and 65535, got 0"
        ],
    ),
    (
        "service-port-too-big",
        SERVICE.replace("port: 80,", "port: 70000,"),
        ["bad.yaml:1: Service/web: spec.ports[0].port: must be between 1 and 65535, got 70000"],
    ),
    (
        "port-name-where-number-needed",
        DEPLOYMENT.replace("containerPort: 8080", "containerPort: http"),
        [
            "bad.yaml:1: Deployment/web: spec.template.spec.containers[0].ports[0].containerPort: "
            "expected an integer, got 'http'"
        ],
    ),
    (
        "bad-target-port-name",
        SERVICE.replace("targetPort: 8080", "targetPort: HTTP_PORT"),
        [
            "bad.yaml:1: Service/web: spec.ports[0].targetPort: invalid port name 'HTTP_PORT': "
            "must be at most 15 lowercase letters, digits and '-', with at least one letter, "
            "no '--', starting and ending with a letter or digit"
        ],
    ),
    (
        "target-port-wrong-type",
        SERVICE.replace("targetPort: 8080", "targetPort: [8080]"),
        [
            "bad.yaml:1: Service/web: spec.ports[0].targetPort: expected a port number or a "
            "container port name, got a list"
        ],
    ),
    (
        "protocol-wrong-case",
        SERVICE.replace("name: http}", "name: http, protocol: tcp}"),
        [
            "bad.yaml:1: Service/web: spec.ports[0].protocol: must be one of TCP, UDP, SCTP, "
            "got 'tcp' (did you mean 'TCP'?)"
        ],
    ),
    (
        "service-ports-unnamed",
        SERVICE.replace("name: http}]", "name: http}, {port: 81}]"),
        [
            "bad.yaml:1: Service/web: spec.ports[1].name: required when a Service has more than one port"
        ],
    ),
    (
        "service-ports-duplicate-name",
        SERVICE.replace("name: http}]", "name: http}, {port: 81, name: http}]"),
        ["bad.yaml:1: Service/web: spec.ports[1].name: duplicate name 'http' (see spec.ports[0])"],
    ),
    (
        "service-external-name",
        SERVICE.replace("spec:\n", "spec:\n  type: ExternalName\n"),
        [
            "bad.yaml:1: Service/web: spec.type: ExternalName Services are not supported; "
            "use a ServiceEntry"
        ],
    ),
    (
        "service-bad-cluster-ip",
        SERVICE.replace("spec:\n", "spec:\n  clusterIP: 10.96.0.300\n"),
        [
            "bad.yaml:1: Service/web: spec.clusterIP: invalid IP address '10.96.0.300' "
            "(use 'None' for a headless Service)"
        ],
    ),
    (
        "bad-pod-ip",
        POD + "status: {podIP: 10.0.0.300}\n",
        ["bad.yaml:1: Pod/probe: status.podIP: invalid IP address '10.0.0.300'"],
    ),
    (
        "bad-cidr",
        """\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: payments}
        spec:
          hosts: [api.payments.example]
          addresses: [10.8.0.0/33]
          ports: [{number: 443, name: tls, protocol: TLS}]
        """,
        [
            "bad.yaml:1: ServiceEntry/payments: spec.addresses[0]: invalid address '10.8.0.0/33': "
            "expected an IP address or a CIDR such as '10.0.0.0/8'"
        ],
    ),
    (
        "service-entry-static-hostname-endpoint",
        """\
        apiVersion: networking.istio.io/v1beta1
        kind: ServiceEntry
        metadata: {name: db, namespace: shop}
        spec:
          hosts: [db.internal]
          resolution: STATIC
          ports: [{number: 5432, name: tcp-pg, protocol: tcp}]
          endpoints:
          - address: db.example.com
            ports: {pg: 5432}
        """,
        [
            "bad.yaml:1: ServiceEntry/db: spec.endpoints[0].address: must be an IP address when "
            "resolution is STATIC, got 'db.example.com'",
            "bad.yaml:1: ServiceEntry/db: spec.endpoints[0].ports[pg]: port 'pg' is not declared "
            "in spec.ports",
        ],
    ),
    (
        "service-entry-no-hosts",
        """\
        apiVersion: networking.istio.io/v1alpha3
        kind: ServiceEntry
        metadata: {name: db}
        spec:
          hosts: []
          ports: [{number: 5432, name: pg}]
        """,
        [
            "bad.yaml:1: ServiceEntry/db: spec.hosts: must not be empty",
            "bad.yaml:1: ServiceEntry/db: spec.ports[0].protocol: missing required field",
        ],
    ),
    (
        "workload-entry-bad-address",
        """\
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: vm-1, namespace: shop}
        spec:
          address: "10.0.0.1:8080"
          ports: {http: 8080}
        """,
        [
            "bad.yaml:1: WorkloadEntry/vm-1: spec.address: invalid address '10.0.0.1:8080': "
            "expected an IP address, a DNS name or unix://<path>"
        ],
    ),
    (
        "selector-does-not-match-template",
        DEPLOYMENT.replace("labels: {app: web}", "labels: {app: webb}"),
        [
            "bad.yaml:1: Deployment/web: spec.template.metadata.labels: do not match "
            "spec.selector (app=web)"
        ],
    ),
    (
        "selector-empty",
        DEPLOYMENT.replace("selector: {matchLabels: {app: web}}", "selector: {}"),
        [
            "bad.yaml:1: Deployment/web: spec.selector: must not be empty: a Deployment must "
            "select its pods"
        ],
    ),
    (
        "selector-expression-without-values",
        DEPLOYMENT.replace(
            "selector: {matchLabels: {app: web}}",
            "selector: {matchExpressions: [{key: app, operator: In}]}",
        ),
        [
            "bad.yaml:1: Deployment/web: spec.selector.matchExpressions[0].values: must not be "
            "empty for operator In"
        ],
    ),
    (
        "bad-label-value",
        SERVICE.replace("name: web}", "name: web, labels: {version: 'v 1'}}"),
        [
            "bad.yaml:1: Service/web: metadata.labels[version]: invalid label value 'v 1': must be "
            "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ],
    ),
    (
        "label-value-not-string",
        SERVICE.replace("name: web}", "name: web, labels: {version: 1}}"),
        [
            "bad.yaml:1: Service/web: metadata.labels[version]: expected a string, got 1 "
            "(quote it in YAML)"
        ],
    ),
    (
        "bad-label-key",
        SERVICE.replace("selector: {app: web}", "selector: {/app: web}"),
        [
            "bad.yaml:1: Service/web: spec.selector[/app]: invalid key '/app': the prefix before "
            "'/' must not be empty"
        ],
    ),
    (
        "arg-not-string",
        POD.replace("[sleep, infinity]", "[sleep, 30]"),
        [
            "bad.yaml:1: Pod/probe: spec.containers[0].command[1]: expected a string, got 30 "
            "(quote it in YAML)"
        ],
    ),
    (
        "env-from-unsupported",
        POD + "    envFrom: [{secretRef: {name: creds}}]\n",
        [
            "bad.yaml:1: Pod/probe: spec.containers[0].envFrom: not supported: there are no "
            "Secrets or ConfigMaps locally; list env entries"
        ],
    ),
    (
        "env-value-and-value-from",
        POD + "    env: [{name: IP, value: x, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]\n",
        [
            "bad.yaml:1: Pod/probe: spec.containers[0].env[0].valueFrom: cannot be used together "
            "with value"
        ],
    ),
    (
        "duplicate-container-names",
        POD + "  - name: app\n    command: [/bin/true]\n",
        [
            "bad.yaml:1: Pod/probe: spec.containers[1].name: duplicate name 'app' (see spec.containers[0])"
        ],
    ),
    (
        "non-string-field-name",
        POD + "1: one\n",
        ["bad.yaml:1: Pod/probe: 1: unknown field: expected a field name, got 1"],
    ),
    (
        "duplicate-object",
        SERVICE + "---\n" + SERVICE,
        [
            "bad.yaml:2: Service/web: metadata.name: duplicate Service default/web: already "
            "defined at bad.yaml:1"
        ],
    ),
    (
        "same-name-other-namespace-is-fine-but-other-errors-are-collected",
        SERVICE
        + "---\n"
        + SERVICE.replace("name: web}", "name: web, namespace: shop}")
        + "---\n"
        + DEPLOYMENT.replace("replicas: 2", "replicas: two")
        + "---\n"
        + POD.replace("name: probe", "name: Probe"),
        [
            "bad.yaml:3: Deployment/web: spec.replicas: expected an integer, got 'two'",
            "bad.yaml:4: Pod/Probe: metadata.name: invalid name 'Probe': must be a lowercase "
            "RFC 1123 subdomain (at most 253 lowercase letters, digits, '-' and '.', starting "
            "and ending with a letter or digit)",
        ],
    ),
    (
        "non-mapping-document",
        SERVICE + "---\n- just\n- a list\n",
        ["bad.yaml:2: expected a mapping with apiVersion and kind, got a list"],
    ),
    (
        "scalar-document",
        "hello\n",
        ["bad.yaml:1: expected a mapping with apiVersion and kind, got 'hello'"],
    ),
    (
        "yaml-syntax-error",
        SERVICE + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: [}\n",
        [
            "bad.yaml:10:19: invalid YAML: expected the node content, but found '}' "
            "(while parsing a flow node)"
        ],
    ),
    (
        "yaml-tab-indentation",
        "apiVersion: v1\nkind: Pod\nmetadata:\n\tname: probe\n",
        [
            "bad.yaml:4:1: invalid YAML: found character '\\t' that cannot start any token "
            "(while scanning for the next token); indent with spaces, not tabs"
        ],
    ),
    (
        "yaml-duplicate-key",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  name: b\n",
        [
            "bad.yaml:5:3: invalid YAML: found duplicate key 'name' (while constructing a "
            "mapping started at line 4, column 3)"
        ],
    ),
    (
        "missing-service-account",
        DEPLOYMENT.replace("      containers:", "      serviceAccountName: web\n      containers:"),
        [
            "bad.yaml:1: Deployment/web: spec.template.spec.serviceAccountName: ServiceAccount "
            "shop/web is not declared; add it, or omit serviceAccountName to run as 'default'"
        ],
    ),
    (
        "duplicate-pod-ip",
        POD
        + "status: {podIP: 10.0.0.7}\n---\n"
        + POD.replace("name: probe", "name: probe-2")
        + "status: {podIP: 10.0.0.7}\n",
        [
            "bad.yaml:2: Pod/probe-2: status.podIP: address 10.0.0.7 is already used by "
            "Pod default/probe (bad.yaml:1)"
        ],
    ),
    (
        "list-item",
        "apiVersion: v1\nkind: List\nitems:\n"
        + textwrap.indent(SERVICE, "  ").replace("  apiVersion", "- apiVersion")
        + textwrap.indent(SERVICE.replace("port: 80,", "port: 0,"), "  ")
        .replace("  apiVersion", "- apiVersion")
        .replace("{name: web}", "{name: web-2}"),
        [
            "bad.yaml:1: Service/web-2: items[1].spec.ports[0].port: must be between 1 and 65535, got 0"
        ],
    ),
    (
        "generic-spec-not-mapping",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: deny, namespace: shop}\nspec: [allow]\n",
        ["bad.yaml:1: AuthorizationPolicy/deny: spec: expected a mapping, got a list"],
    ),
    (
        "generic-spec-recursive-alias",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: t}\n"
        "spec: &loop {again: *loop}\n",
        [
            "bad.yaml:1: AuthorizationPolicy/t: spec: a YAML alias refers to a value that contains it"
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_manifest(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_there_are_many_cases() -> None:
    assert len(CASES) >= 25


def test_problem_renders_missing_segments() -> None:
    assert str(Problem("a.yaml")) == "a.yaml: "
    assert str(Problem("a.yaml", 2, message="boom")) == "a.yaml:2: boom"
    assert str(Problem("a.yaml", 2, "Pod", "", "spec", "boom")) == "a.yaml:2: Pod: spec: boom"
    assert str(Problem("a.yaml", None, line=3, column=4, message="bad")) == "a.yaml:3:4: bad"


def test_problem_never_spans_lines() -> None:
    problem = Problem("a\nb.yaml", 1, "Pod", "x\ny", "spec.a\tb", "line1\nline2")
    assert str(problem) == "a\\nb.yaml:1: Pod/x\\ny: spec.a\\tb: line1\\nline2"


def test_config_error_keeps_problems_and_warnings() -> None:
    error = ConfigError([Problem("a.yaml", 1, message="x")], [Problem("a.yaml", 2, message="w")])
    assert [str(p) for p in error.problems] == ["a.yaml:1: x"]
    assert [str(p) for p in error.warnings] == ["a.yaml:2: w"]
    assert str(error) == "a.yaml:1: x"
