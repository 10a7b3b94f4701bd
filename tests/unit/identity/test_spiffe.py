"""SPIFFE id parsing and validation."""

import pytest

from ambient.identity import DEFAULT_TRUST_DOMAIN, InvalidSpiffeId, SpiffeId

VALID = [
    ("spiffe://cluster.local/ns/default/sa/default", "cluster.local", "default", "default"),
    ("spiffe://cluster.local/ns/shop/sa/cart", "cluster.local", "shop", "cart"),
    ("spiffe://td_1.example-x/ns/a/sa/b", "td_1.example-x", "a", "b"),
    ("spiffe://example/ns/kube-system/sa/bookinfo-productpage", "example", "kube-system",
     "bookinfo-productpage"),
    ("spiffe://cluster.local/ns/a1/sa/svc.account-2", "cluster.local", "a1", "svc.account-2"),
    ("spiffe://cluster.local/ns/" + "a" * 63 + "/sa/x", "cluster.local", "a" * 63, "x"),
]  # fmt: skip

INVALID = [
    ("", "empty string"),
    ("cluster.local/ns/a/sa/b", "scheme must be 'spiffe://'"),
    ("https://cluster.local/ns/a/sa/b", "scheme must be 'spiffe://'"),
    ("spiffe:/cluster.local/ns/a/sa/b", "scheme must be 'spiffe://'"),
    ("SPIFFE://cluster.local/ns/a/sa/b", "scheme must be lowercase"),
    ("spiffe://", "trust domain is empty"),
    ("spiffe:///ns/a/sa/b", "trust domain is empty"),
    ("spiffe://Cluster.Local/ns/a/sa/b", "lowercase letters"),
    ("spiffe://clu ster/ns/a/sa/b", "lowercase letters"),
    ("spiffe://clüster/ns/a/sa/b", "lowercase letters"),
    ("spiffe://user@cluster.local/ns/a/sa/b", "userinfo"),
    ("spiffe://cluster.local:8080/ns/a/sa/b", "port"),
    ("spiffe://cluster.local/ns/a/sa/b?x=1", "query"),
    ("spiffe://cluster.local/ns/a/sa/b#frag", "fragment"),
    ("spiffe://cluster.local/ns/a%2Fb/sa/b", "percent-encoding"),
    ("spiffe://cluster.local", "missing path"),
    ("spiffe://cluster.local/", "missing path"),
    ("spiffe://cluster.local/ns/a/sa/b/", "empty segment"),
    ("spiffe://cluster.local//ns/a/sa/b", "empty segment"),
    ("spiffe://cluster.local/ns//sa/b", "empty segment"),
    ("spiffe://cluster.local/ns/a/sa/", "empty segment"),
    ("spiffe://cluster.local/ns/a", "not of the form /ns/<namespace>/sa/<account>"),
    ("spiffe://cluster.local/ns/a/sa/b/extra", "not of the form"),
    ("spiffe://cluster.local/sa/b/ns/a", "not of the form"),
    ("spiffe://cluster.local/NS/a/sa/b", "not of the form"),
    ("spiffe://cluster.local/workload/a", "not of the form"),
    ("spiffe://cluster.local/ns/A/sa/b", "namespace 'A' is not a DNS label"),
    ("spiffe://cluster.local/ns/-a/sa/b", "namespace '-a' is not a DNS label"),
    ("spiffe://cluster.local/ns/a./sa/b", "namespace 'a.' is not a DNS label"),
    ("spiffe://cluster.local/ns/a_b/sa/b", "is not a DNS label"),
    ("spiffe://cluster.local/ns/" + "a" * 64 + "/sa/b", "is not a DNS label"),
    ("spiffe://cluster.local/ns/a/sa/B", "service account 'B' is not a DNS subdomain"),
    ("spiffe://cluster.local/ns/a/sa/..", "is not a DNS subdomain"),
    ("spiffe://cluster.local/ns/a/sa/b..c", "is not a DNS subdomain"),
    ("spiffe://cluster.local/ns/a/sa/b\n", "is not a DNS subdomain"),
    (" spiffe://cluster.local/ns/a/sa/b", "scheme must be 'spiffe://'"),
    ("spiffe://" + "a" * 256 + "/ns/a/sa/b", "longer than 255"),
    ("spiffe://cluster.local/ns/a/sa/" + "b" * 2100, "longer than 2048 bytes"),
]


@pytest.mark.parametrize(("uri", "td", "ns", "sa"), VALID)
def test_parse_valid(uri: str, td: str, ns: str, sa: str) -> None:
    parsed = SpiffeId.parse(uri)
    assert parsed == SpiffeId(td, ns, sa)
    assert str(parsed) == parsed.uri == uri


@pytest.mark.parametrize(("uri", "message"), INVALID)
def test_parse_invalid(uri: str, message: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse(uri)
    text = str(info.value)
    assert message in text
    assert text.startswith("invalid SPIFFE id ")
    assert repr(uri)[:40] in text  # names the offending input
    assert isinstance(info.value, ValueError)


def test_parse_rejects_non_string() -> None:
    with pytest.raises(InvalidSpiffeId, match="expected a string, got bytes"):
        SpiffeId.parse(b"spiffe://cluster.local/ns/a/sa/b")  # type: ignore[arg-type]


def test_long_input_is_shortened_in_message() -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse("spiffe://cluster.local/ns/a/sa/" + "b" * 5000)
    assert len(str(info.value)) < 200


def test_workload_defaults() -> None:
    ident = SpiffeId.workload("shop")
    assert ident == SpiffeId(DEFAULT_TRUST_DOMAIN, "shop", "default")
    assert ident.uri == "spiffe://cluster.local/ns/shop/sa/default"
    assert SpiffeId.workload("a", "b", "example.org").uri == "spiffe://example.org/ns/a/sa/b"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Shop",), "namespace 'Shop' is not a DNS label"),
        (("",), "namespace is empty"),
        (("shop", ""), "service account is empty"),
        (("shop", "a/b"), "service account 'a/b'"),
        (("shop", "default", "Evil"), "lowercase letters"),
        (("shop", "default", ""), "trust domain is empty"),
    ],
)
def test_constructor_validates(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(InvalidSpiffeId, match=message):
        SpiffeId.workload(*args)


def test_frozen_and_hashable() -> None:
    ident = SpiffeId.workload("a", "b")
    with pytest.raises(AttributeError):
        ident.namespace = "c"  # type: ignore[misc]
    assert {ident: 1}[SpiffeId.parse("spiffe://cluster.local/ns/a/sa/b")] == 1


def test_workload_ids_are_shared_and_still_validated() -> None:
    first = SpiffeId.workload("bench", "client")
    assert SpiffeId.workload("bench", "client") is first  # cached: asked for per connection
    assert SpiffeId.workload("bench", "server") != first
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.workload("Not_A_Namespace", "client")
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.workload(["bench"], "client")  # type: ignore[arg-type]
