"""Property: whatever the input, loading returns a ConfigSet or raises ConfigError, one line each."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient.config import DEFAULT_REGISTRY, ConfigError, load_text

SHOP = (Path(__file__).parent / "shop.yaml").read_text()
FIELDS = [
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    "status",
    "containers",
    "command",
    "args",
    "env",
    "value",
    "valueFrom",
    "fieldRef",
    "fieldPath",
    "ports",
    "port",
    "containerPort",
    "targetPort",
    "protocol",
    "selector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "template",
    "replicas",
    "clusterIP",
    "type",
    "podIP",
    "address",
    "hosts",
    "addresses",
    "number",
    "endpoints",
    "resolution",
    "workloadSelector",
    "items",
    "serviceAccountName",
    "nodeName",
    "app",
]
API_VERSIONS = sorted(
    {
        version
        for kind in DEFAULT_REGISTRY.kinds()
        if (spec := DEFAULT_REGISTRY.lookup(kind)) is not None
        for version in spec.api_versions
    }
)
KINDS = [*DEFAULT_REGISTRY.kinds(), "List", "ServiceList", "Bogus"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["80", "http", "10.0.0.1", "10.0.0.0/8", "None", "app", "TCP", "In", "a/b"]),
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8), st.integers(0, 3))
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)
documents = st.fixed_dictionaries(
    {"apiVersion": st.sampled_from(API_VERSIONS), "kind": st.sampled_from(KINDS)},
    optional={"metadata": values, "spec": values, "status": values, "items": values},
).flatmap(lambda doc: st.dictionaries(keys, values, max_size=2).map(lambda extra: {**extra, **doc}))


def assert_loads_or_config_error(text: str) -> None:
    try:
        load_text(text, "fuzz.yaml")
    except ConfigError as err:
        assert err.problems
        for problem in err.problems + err.warnings:
            assert "\n" not in str(problem)
            assert str(problem).startswith("fuzz.yaml")


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(max_size=200))
def test_any_text(text: str) -> None:
    assert_loads_or_config_error(text)


@FUZZ
@given(st.lists(st.one_of(documents, values), min_size=1, max_size=3))
def test_yaml_documents(docs: list[object]) -> None:
    assert_loads_or_config_error(yaml.safe_dump_all(docs))


@FUZZ
@given(st.integers(0, len(SHOP)), st.integers(0, 40), st.text(max_size=5))
def test_mangled_manifest(at: int, cut: int, insert: str) -> None:
    assert_loads_or_config_error(SHOP[:at] + insert + SHOP[at + cut :])


def test_pathological_yaml() -> None:
    for text in [
        "[" * 1000,
        "a: " + "[" * 600 + "]" * 600,
        "&a [*a]",
        "kind: Pod\napiVersion: v1\nmetadata: &m {name: x, labels: *m}\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: !!python/object:os.system {}\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: !!set {a, b}}\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: !!binary aGk=}\n",
        "? [a, b]\n: c\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x, creationTimestamp: 2024-01-01T00:00:00Z}\n"
        "spec: {containers: [{name: c, args: [=, 2024-01-01]}]}\n",
        "\ufeffapiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 1e400}]}\n",
    ]:
        assert_loads_or_config_error(text)
