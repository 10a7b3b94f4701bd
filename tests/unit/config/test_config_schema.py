"""The field-checking toolkit and the string rules, as tables."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ambient.config import FrozenMap, rules
from ambient.config.frozen import RecursiveValueError, deep_freeze
from ambient.config.schema import (
    INVALID,
    AnyMapping,
    Bool,
    Choice,
    FieldPath,
    Int,
    IntOrStr,
    ListOf,
    MapKey,
    MapOf,
    Node,
    Obj,
    Report,
    Str,
    render_path,
    req,
    show,
    snake_case,
)


def run(node: Node[object], value: object) -> tuple[object, list[str]]:
    report = Report()
    result = node.parse(value, ("x",), report)
    return result, [f"{render_path(i.path)}: {i.message}" for i in report.issues]


@pytest.mark.parametrize(
    ("node", "value", "expected"),
    [
        (Str(), "a", ("a", [])),
        (Str(), None, (INVALID, ["x: expected a string, got null"])),
        (Str(), True, (INVALID, ["x: expected a string, got true (quote it in YAML)"])),
        (Str(), 1.5, (INVALID, ["x: expected a string, got 1.5 (quote it in YAML)"])),
        (Str(rules.not_empty), "", (INVALID, ["x: must not be empty"])),
        (Int(), 3, (3, [])),
        (Int(), True, (INVALID, ["x: expected an integer, got true"])),
        (Int(), 3.0, (INVALID, ["x: expected an integer, got 3.0"])),
        (Int(), "3", (INVALID, ["x: expected an integer, got '3'"])),
        (Int(minimum=0), -1, (INVALID, ["x: must be at least 0, got -1"])),
        (Int(maximum=9), 10, (INVALID, ["x: must be at most 9, got 10"])),
        (Bool(), False, (False, [])),
        (Bool(), "yes", (INVALID, ["x: expected a boolean (true or false), got 'yes'"])),
        (Choice("A", "B"), "B", ("B", [])),
        (Choice("A", "B"), "c", (INVALID, ["x: must be one of A, B, got 'c'"])),
        (Choice("HTTP", ignore_case=True), "http", ("HTTP", [])),
        (IntOrStr(Int(1), Str(), "a port"), 0, (INVALID, ["x: must be at least 1, got 0"])),
        (IntOrStr(Int(1), Str(), "a port"), "p", ("p", [])),
        (IntOrStr(Int(1), Str(), "a port"), None, (INVALID, ["x: expected a port, got null"])),
        (ListOf(Int()), [1, 2], ((1, 2), [])),
        (ListOf(Int()), {"a": 1}, (INVALID, ["x: expected a list, got a mapping"])),
        (
            ListOf(Int()),
            [1, "a", "b"],
            (INVALID, ["x[1]: expected an integer, got 'a'", "x[2]: expected an integer, got 'b'"]),
        ),
        (ListOf(Int(), non_empty=True), [], (INVALID, ["x: must not be empty"])),
        (MapOf(Int()), {"a": 1}, (FrozenMap({"a": 1}), [])),
        (MapOf(Int()), {1: 1}, (INVALID, ["x[1]: expected a string key, got 1"])),
        (
            MapOf(Int(), rules.label_key),
            {"a b": 1},
            (
                INVALID,
                [
                    "x[a b]: invalid key 'a b': the name part must consist of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
                ],
            ),
        ),
        (AnyMapping(), {"a": [1, {"b": 2}]}, (FrozenMap({"a": (1, FrozenMap({"b": 2}))}), [])),
        (AnyMapping(), {3: 1}, (INVALID, ["x.3: expected a string key, got 3"])),
    ],
)
def test_nodes(node: Node[object], value: object, expected: tuple[object, list[str]]) -> None:
    assert run(node, value) == expected


@dataclass(frozen=True)
class Port:
    number: int
    name: str = ""
    app_protocol: str | None = None


PORT = Obj(
    Port,
    {"number": req(Int(1, 65535)), "name": Str(), "appProtocol": Str()},
    ignore=["hostPort"],
    unsupported={"hostIP": "no"},
)


def test_obj_builds_and_reports_every_problem() -> None:
    assert run(PORT, {"number": 80, "appProtocol": "http", "hostPort": 1}) == (
        Port(80, "", "http"),
        [],
    )
    assert run(PORT, {"number": 80, "name": None}) == (Port(80), [])
    assert run(PORT, {"nmuber": 80, "name": 5, "hostIP": "x"}) == (
        INVALID,
        [
            "x.nmuber: unknown field (did you mean 'number'?)",
            "x.name: expected a string, got 5 (quote it in YAML)",
            "x.hostIP: not supported: no",
            "x.number: missing required field",
        ],
    )
    assert run(
        ListOf(PORT, unique=["name", "number"]),
        [{"number": 1, "name": "a"}, {"number": 1, "name": "a"}],
    ) == (
        INVALID,
        ["x[1].name: duplicate name 'a' (see x[0])", "x[1].number: duplicate number 1 (see x[0])"],
    )


def test_obj_checks_run_only_on_valid_objects() -> None:
    def no_eighty(port: Port, at: FieldPath, report: Report) -> None:
        if port.number == 80:
            report.error((*at, "number"), "not 80")

    node = Obj(Port, {"number": req(Int())}, checks=[no_eighty])
    assert run(node, {"number": 80}) == (INVALID, ["x.number: not 80"])
    assert run(node, {"number": "80"}) == (INVALID, ["x.number: expected an integer, got '80'"])


def test_obj_table_must_match_the_dataclass() -> None:
    with pytest.raises(TypeError, match="no init field 'nmuber'"):
        Obj(Port, {"nmuber": req(Int())})
    with pytest.raises(TypeError, match=r"Port\.number has no default"):
        Obj(Port, {"number": Int()})


def test_paths_and_names() -> None:
    assert render_path(("spec", "containers", 0, "ports", 1)) == "spec.containers[0].ports[1]"
    assert (
        render_path(("metadata", "labels", MapKey("istio.io/x"))) == "metadata.labels[istio.io/x]"
    )
    assert render_path((0, "a")) == "[0].a"
    assert [snake_case(n) for n in ["containerPort", "clusterIP", "podIP", "from", "x-y"]] == [
        "container_port",
        "cluster_ip",
        "pod_ip",
        "from_",
        "x_y",
    ]
    assert show("x" * 100).endswith("...")
    assert show(b"x") == "binary data"
    assert show({1}) == "a value of YAML type set"


def test_frozen_values() -> None:
    shared = [1]
    frozen = deep_freeze({"a": shared, "b": shared})
    assert frozen == FrozenMap({"a": (1,), "b": (1,)})
    assert hash(frozen) == hash(FrozenMap({"b": (1,), "a": (1,)}))
    assert repr(FrozenMap({"a": 1})) == "FrozenMap({'a': 1})"
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(RecursiveValueError):
        deep_freeze(loop)
    deep: list[object] = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(RecursiveValueError, match="deep"):
        deep_freeze(deep)


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        (
            rules.dns1123_label,
            ["a", "a-1", "1a", "x" * 63],
            ["", "A", "a_b", "-a", "a-", "a.b", "x" * 64],
        ),
        (rules.dns1123_subdomain, ["a.b-c.d", "x" * 253], ["a..b", ".a", "A.b", "x" * 254]),
        (rules.dns1035_label, ["web", "w-1"], ["1web", "web-", "Web"]),
        (
            rules.label_key,
            ["app", "istio.io/dataplane-mode", "a_b.c-d"],
            ["/a", "a/", "Istio.io/x", "a b", "_a", "x" * 64],
        ),
        (rules.label_value, ["", "v1", "A_b.c-1"], ["v 1", "-v", "x" * 64]),
        (
            rules.iana_svc_name,
            ["http", "grpc-web", "h2"],
            ["", "HTTP", "123", "a--b", "-a", "x" * 16],
        ),
        (rules.env_var_name, ["POD_IP", "a.b-c", "_X"], ["1X", "A=B", ""]),
        (
            rules.ip_address,
            ["10.0.0.1", "::1", "fd00::5"],
            ["10.0.0.256", "10.0.0", "010.0.0.1", "x"],
        ),
        (
            rules.cidr,
            ["10.0.0.0/8", "10.0.0.1/24", "fd00::/64"],
            ["10.0.0.0", "10.0.0.0/33", "x/8"],
        ),
        (rules.ip_or_cidr, ["10.0.0.1", "10.0.0.0/8"], ["10.0.0.0/99", "example.com"]),
        (
            rules.hostname,
            ["api.example.com", "*.example.com", "svc", "A.B"],
            ["*", "a..b", "a.*.b", "-a.com", "a_b.com"],
        ),
        (
            rules.workload_address,
            ["10.0.0.1", "vm.example.com", "unix:///var/run/app.sock"],
            ["10.0.0.1:80", "unix://", "*.x.com", "a b"],
        ),
    ],
)
def test_rules(rule: rules.Rule, good: list[str], bad: list[str]) -> None:
    assert [v for v in good if rule(v) is not None] == []
    assert [v for v in bad if rule(v) is None] == []
