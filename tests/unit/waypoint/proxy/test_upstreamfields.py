"""The upstream request's fields: the kept pass of a repeated head gives exactly what a
fresh pass gives, and a head with credentials is never kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ambient.waypoint.model import HeaderOps, Headers
from ambient.waypoint.proxy.messages import strip_hop_by_hop
from ambient.waypoint.proxy.upstreamfields import UpstreamFields

NAMES = ["host", "x-request-id", "cookie", "x-forwarded-proto", "te", "connection", "x-a",
         "authorization", "content-type", "keep-alive", "x-b"]  # fmt: skip
FIELD = st.tuples(st.sampled_from(NAMES), st.sampled_from(["1", "trailers", "x-a", "close"]))
HEADS = st.lists(st.lists(FIELD, max_size=6).map(tuple), min_size=1, max_size=6)
OPS = st.sampled_from(
    [HeaderOps(), HeaderOps(set=(("x-a", "s"),)), HeaderOps(remove=("x-request-id",))]
)


def reference(headers: Headers, ops: HeaderOps, request_id: str) -> Headers:
    """The rule, written plainly (the forwarder's code before the memo)."""
    out = []
    cookies = 0
    forwarded_proto = False
    for name, value in strip_hop_by_hop(headers):
        if name in ("host", "x-request-id"):
            continue
        cookies += name == "cookie"
        forwarded_proto = forwarded_proto or name == "x-forwarded-proto"
        out.append((name, value))
    if cookies > 1:
        joined = "; ".join(v for k, v in out if k == "cookie")
        out = [(k, v) for k, v in out if k != "cookie"] + [("cookie", joined)]
    out.append(("x-request-id", request_id))
    if not forwarded_proto:
        out.append(("x-forwarded-proto", "http"))
    return ops.apply(tuple(out))


@given(heads=HEADS, ops=OPS)
def test_kept_pass_gives_what_a_fresh_pass_gives(heads: list[Headers], ops: HeaderOps) -> None:
    fields = UpstreamFields()
    for i, head in enumerate(heads * 2):  # every head seen again, some right after itself
        assert fields.fields(head, ops, f"id-{i}") == reference(head, ops, f"id-{i}")


def test_a_repeated_head_is_kept_but_not_one_with_credentials() -> None:
    fields = UpstreamFields()
    head = (("host", "a"), ("x-a", "1"))
    assert fields.fields(head, HeaderOps(), "1") == (
        ("x-a", "1"), ("x-request-id", "1"), ("x-forwarded-proto", "http"))  # fmt: skip
    assert fields._last is not None and fields._last[0] == head
    for secret in (("authorization", "Bearer x"), ("cookie", "s=1")):
        fields.fields((*head, secret), HeaderOps(), "2")
        assert fields._last is None  # nothing of a request with credentials is kept
