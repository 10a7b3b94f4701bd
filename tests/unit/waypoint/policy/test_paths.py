"""Path normalization (Istio's BASE and friends) and policy path matchers, as tables."""

from __future__ import annotations

import pytest

from ambient.authz.translate import PolicyError, translate_authorization_policy
from ambient.waypoint.policy.paths import PathNormalization, compile_path, normalize_path

BASE = PathNormalization.BASE
MERGE = PathNormalization.MERGE_SLASHES
DECODE = PathNormalization.DECODE_AND_MERGE_SLASHES
NONE = PathNormalization.NONE


@pytest.mark.parametrize(
    ("raw", "mode", "expected"),
    [
        ("/api/orders", BASE, "/api/orders"),
        ("/a/./b", BASE, "/a/b"),
        ("/a/b/../c", BASE, "/a/c"),
        ("/a/b/..", BASE, "/a/"),
        ("/a/b/.", BASE, "/a/b/"),
        ("/../../etc/passwd", BASE, "/etc/passwd"),
        ("/api/../admin", BASE, "/admin"),
        ("/a/%2e%2e/admin", BASE, "/admin"),  # %2E is a dot once decoded
        ("/a/%2E/b", BASE, "/a/b"),
        ("/%61dmin", BASE, "/admin"),  # unreserved escapes decoded
        ("/a%7Eb", BASE, "/a~b"),
        ("/a%2fb", BASE, "/a%2Fb"),  # %2F kept (upper-cased): one segment
        ("/a%5cb", BASE, "/a%5Cb"),
        ("/a%20b", BASE, "/a%20b"),
        ("/a%zzb", BASE, "/a%zzb"),  # not an escape: left as written
        ("/a%", BASE, "/a%"),
        ("/admin\\secret", BASE, "/admin/secret"),  # backslashes are slashes
        ("/api\\..\\admin", BASE, "/admin"),
        ("/a//b", BASE, "/a//b"),  # BASE does not merge slashes
        ("/a//b", MERGE, "/a/b"),
        ("/a/..//b", MERGE, "/b"),
        ("/a%2Fb", MERGE, "/a%2Fb"),
        ("/a%2Fb", DECODE, "/a/b"),
        ("/a%2f%2fb", DECODE, "/a/b"),
        ("/a%5Cb", DECODE, "/a/b"),
        ("/a/../b", NONE, "/a/../b"),
        ("*", BASE, "*"),
        ("", BASE, ""),
        ("/.hidden", BASE, "/.hidden"),
        ("/a/..b", BASE, "/a/..b"),
    ],
)
def test_normalize(raw: str, mode: PathNormalization, expected: str) -> None:
    assert normalize_path(raw, mode) == expected
    assert normalize_path(expected, mode) == expected  # idempotent


@pytest.mark.parametrize(
    ("pattern", "path", "ok"),
    [
        ("/api", "/api", True),
        ("/api", "/api/", False),
        ("/api/*", "/api/orders", True),
        ("/api/*", "/api/", True),
        ("/api/*", "/api", False),
        ("*.png", "/img/a.png", True),
        ("*.png", "/img/a.jpg", False),
        ("*", "/", True),
        ("/api/{*}", "/api/orders", True),
        ("/api/{*}", "/api/orders/1", False),
        ("/api/{*}", "/api/", False),  # {*} is one non-empty segment
        ("/api/{*}/items", "/api/7/items", True),
        ("/api/{*}/items", "/api/7/8/items", False),
        ("/api/{**}", "/api/", True),
        ("/api/{**}", "/api/a/b/c", True),
        ("/api/{**}", "/api", False),
        ("/api/{**}/edit", "/api/a/b/edit", True),
        ("/api/{**}/edit", "/api/a/b/view", False),
        ("/{*}/{**}", "/x/y/z", True),
        ("/a.b/{*}", "/aXb/c", False),  # literals are literal, not regex
    ],
)
def test_path_matchers(pattern: str, path: str, ok: bool) -> None:
    assert compile_path(pattern).matches(path) is ok


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/api/{**}/{*}", "{**} must be the last"),
        ("/api/{**}/{**}", "{**} must be the last"),
        ("/api/{id}", "only allowed as whole-segment"),
        ("/api/x{*}", "only allowed as whole-segment"),
        ("/api/*/{*}", "not a valid literal"),
        ("/api//{*}", "not a valid literal"),
    ],
)
def test_bad_templates_refused_at_load(path: str, problem: str) -> None:
    spec = {
        "targetRefs": [{"kind": "Service", "name": "orders"}],
        "rules": [{"to": [{"operation": {"paths": ["/ok", path]}}]}],
    }
    with pytest.raises(PolicyError) as err:
        translate_authorization_policy("p", "shop", spec)
    assert err.value.path == "spec.rules[0].to[0].operation.paths[1]"
    assert problem in err.value.message
