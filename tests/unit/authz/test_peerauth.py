"""PeerAuthentication: validation, precedence and per-port mTLS modes for ztunnel.

Precedence and the ambient treatment of each mode follow istiod
(``pilot/pkg/serviceregistry/ambient/authorization.go``:
``convertedSelectorPeerAuthentications``, ``convertPeerAuthentication``) and the
istio.io PeerAuthentication reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ambient.authz.evaluate import Workload
from ambient.authz.peerauth import (
    Mode,
    PeerAuthentication,
    mtls_mode_for,
    plaintext_allowed,
    resolve_mtls,
    translate_peer_authentication,
)
from ambient.authz.store import PolicyStore
from ambient.authz.translate import PolicyError

from .helpers import ORDERS, PA, build_store

S, P, D, U = Mode.STRICT, Mode.PERMISSIVE, Mode.DISABLE, Mode.UNSET


def pa(level: str, mode: Mode, ports: dict[int, Mode] | None = None) -> PeerAuthentication:
    selector = (("app", "orders"),) if level == "wl" else None
    namespace = "istio-system" if level == "mesh" else "shop"
    return PeerAuthentication(level, namespace, mode, selector, tuple((ports or {}).items()))


@dataclass(frozen=True)
class Level:
    id: str
    rule: str
    mesh: Mode | None
    namespace: Mode | None
    workload: Mode | None
    ports: dict[int, Mode]
    strict_8080: bool
    strict_9090: bool


INHERIT = "istio.io PeerAuthentication UNSET: 'Inherit from parent, if has one. Otherwise treated as PERMISSIVE.'"
OVERRIDE = "istio.io PeerAuthentication: a workload (selector) policy overrides the namespace policy, which overrides the mesh policy"
DISABLE = "istio.io PeerAuthentication: 'In ambient mode ... DISABLE mode is not supported'; istiod treats DISABLE as PERMISSIVE"
PORT = "istio.io PeerAuthentication portLevelMtls: per workload port; istiod converted_peer_authentication policy"
QUIRK = "istiod convertedSelectorPeerAuthentications: under an UNSET workload mode inheriting STRICT, only port-level PERMISSIVE (not DISABLE) opens a port"
FIXED = "deliberate: a port-level STRICT is enforced even where istiod's condition (PERMISSIVE workload, STRICT mesh, no namespace policy) drops it"
LEVELS = [
    Level("nothing", INHERIT, None, None, None, {}, False, False),
    Level("mesh-unset", INHERIT, U, None, None, {}, False, False),
    Level("mesh-strict", OVERRIDE, S, None, None, {}, True, True),
    Level("mesh-permissive", OVERRIDE, P, None, None, {}, False, False),
    Level("mesh-disable", DISABLE, D, None, None, {}, False, False),
    Level("ns-strict", OVERRIDE, None, S, None, {}, True, True),
    Level("ns-unset-inherits-mesh-strict", INHERIT, S, U, None, {}, True, True),
    Level("ns-permissive-over-mesh-strict", OVERRIDE, S, P, None, {}, False, False),
    Level("ns-disable-over-mesh-strict", DISABLE, S, D, None, {}, False, False),
    Level("ns-strict-over-mesh-permissive", OVERRIDE, P, S, None, {}, True, True),
    Level("wl-strict", OVERRIDE, None, None, S, {}, True, True),
    Level("wl-unset-inherits-ns-strict", INHERIT, None, S, U, {}, True, True),
    Level("wl-unset-inherits-mesh-strict", INHERIT, S, None, U, {}, True, True),
    Level("wl-permissive-over-ns-strict", OVERRIDE, None, S, P, {}, False, False),
    Level("wl-disable-over-mesh-strict", DISABLE, S, None, D, {}, False, False),
    Level("wl-strict-over-ns-permissive", OVERRIDE, None, P, S, {}, True, True),
    Level("wl-strict-port-permissive", PORT, None, None, S, {8080: P}, False, True),
    Level("wl-strict-port-disable", PORT, None, None, S, {8080: D}, False, True),
    Level("wl-strict-port-unset", PORT, None, None, S, {8080: U}, True, True),
    Level("wl-permissive-port-strict", PORT, None, None, P, {8080: S}, True, False),
    Level("wl-disable-port-strict", PORT, None, None, D, {8080: S}, True, False),
    Level("wl-unset-ns-strict-port-permissive", PORT, None, S, U, {8080: P}, False, True),
    Level(
        "wl-unset-mesh-strict-port-disable-stays-strict", QUIRK, S, None, U, {8080: D}, True, True
    ),
    Level("wl-unset-ns-permissive-port-strict", PORT, S, P, U, {8080: S}, True, False),
    Level("wl-unset-nothing-port-strict", PORT, None, None, U, {8080: S}, True, False),
    Level("wl-permissive-mesh-strict-port-strict", FIXED, S, None, P, {8080: S}, True, False),
]


@pytest.mark.parametrize("level", LEVELS, ids=[level.id for level in LEVELS])
def test_precedence(level: Level) -> None:
    mesh = None if level.mesh is None else pa("mesh", level.mesh)
    ns = None if level.namespace is None else pa("ns", level.namespace)
    wl = None if level.workload is None else pa("wl", level.workload, level.ports)
    mtls = resolve_mtls(mesh, ns, wl, root_namespace="istio-system")
    assert (mtls.strict_for(8080), mtls.strict_for(9090)) == (
        level.strict_8080,
        level.strict_9090,
    ), level.rule


def _store(*peers: PA) -> PolicyStore:
    return build_store(peers=peers)


def test_store_picks_levels_and_api() -> None:
    store = _store(
        PA("istio-system", "mesh", {"mtls": {"mode": "STRICT"}}),
        PA("shop", "ns", {"mtls": {"mode": "PERMISSIVE"}}),
        PA(
            "shop",
            "orders",
            {
                "selector": {"matchLabels": {"app": "orders"}},
                "portLevelMtls": {"9090": {"mode": "STRICT"}},
            },
        ),
    )
    assert mtls_mode_for(store, ORDERS, 8080) is Mode.PERMISSIVE
    assert mtls_mode_for(store, ORDERS, 9090) is Mode.STRICT
    assert plaintext_allowed(store, ORDERS, 8080)
    assert not plaintext_allowed(store, ORDERS, 9090)
    assert mtls_mode_for(store, Workload("web", {}), 8080) is Mode.STRICT
    assert mtls_mode_for(store, Workload("istio-system", {}), 1) is Mode.STRICT


def test_oldest_policy_wins_a_tie() -> None:
    store = _store(
        PA("shop", "b-newer", {"mtls": {"mode": "PERMISSIVE"}}, created=2.0),
        PA("shop", "a-older", {"mtls": {"mode": "STRICT"}}, created=1.0),
    )
    assert mtls_mode_for(store, ORDERS, 80) is Mode.STRICT
    same_time = _store(
        PA("shop", "b", {"mtls": {"mode": "PERMISSIVE"}}),
        PA("shop", "a", {"mtls": {"mode": "STRICT"}}),
    )
    assert mtls_mode_for(same_time, ORDERS, 80) is Mode.STRICT


def test_root_namespace_selector_policy_is_ignored() -> None:
    spec = {"selector": {"matchLabels": {"app": "orders"}}, "mtls": {"mode": "STRICT"}}
    result = translate_peer_authentication("x", "istio-system", spec)
    assert result.policy is None
    assert any("ignored" in w for w in result.warnings)


def test_disable_warns() -> None:
    result = translate_peer_authentication("x", "shop", {"mtls": {"mode": "DISABLE"}})
    assert result.policy is not None and result.policy.mode is Mode.DISABLE
    assert any("DISABLE is not supported in ambient" in w for w in result.warnings)


def test_empty_selector_is_namespace_wide() -> None:
    result = translate_peer_authentication(
        "x", "shop", {"selector": {}, "mtls": {"mode": "STRICT"}}
    )
    assert result.policy is not None and result.policy.selector is None
    assert result.warnings


def test_port_keys_from_yaml_or_json() -> None:
    spec = {
        "selector": {"matchLabels": {"a": "b"}},
        "portLevelMtls": {8080: {"mode": "STRICT"}, "9090": None},
    }
    result = translate_peer_authentication("x", "shop", spec)
    assert result.policy is not None
    assert result.policy.port_level == ((8080, Mode.STRICT), (9090, Mode.UNSET))


SEL = {"matchLabels": {"app": "orders"}}
BAD = [
    ("unknown-field", {"mtls": {"mode": "STRICT"}, "mode": "STRICT"}, "spec.mode", "unknown field"),
    ("unknown-mtls-field", {"mtls": {"mod": "STRICT"}}, "spec.mtls.mod", "unknown field"),
    ("bad-mode", {"mtls": {"mode": "strict"}}, "spec.mtls.mode", "invalid mode"),
    ("mode-type", {"mtls": {"mode": 3}}, "spec.mtls.mode", "expected a string"),
    ("mtls-type", {"mtls": "STRICT"}, "spec.mtls", "expected a mapping"),
    (
        "port-level-without-selector",
        {"portLevelMtls": {8080: {"mode": "STRICT"}}},
        "spec.portLevelMtls",
        "cannot have port level",
    ),
    (
        "port-level-empty",
        {"selector": SEL, "portLevelMtls": {}},
        "spec.portLevelMtls",
        "at least one element",
    ),
    (
        "port-zero",
        {"selector": SEL, "portLevelMtls": {0: {"mode": "STRICT"}}},
        "spec.portLevelMtls[0]",
        "1..65535",
    ),
    (
        "port-name",
        {"selector": SEL, "portLevelMtls": {"http": {"mode": "STRICT"}}},
        "spec.portLevelMtls[http]",
        "invalid port",
    ),
    (
        "port-twice",
        {"selector": SEL, "portLevelMtls": {8080: {}, "8080": {}}},
        "spec.portLevelMtls[8080]",
        "listed twice",
    ),
    (
        "port-bad-mode",
        {"selector": SEL, "portLevelMtls": {8080: {"mode": "OFF"}}},
        "spec.portLevelMtls[8080].mode",
        "invalid mode",
    ),
    (
        "selector-wildcard",
        {"selector": {"matchLabels": {"app": "*"}}},
        "spec.selector.matchLabels[app]",
        "wildcards",
    ),
]


@pytest.mark.parametrize(("id", "spec", "path", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_invalid_peer_authentication(
    id: str, spec: dict[str, object], path: str, fragment: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        translate_peer_authentication("x", "shop", spec)
    assert caught.value.path == path, caught.value
    assert fragment in caught.value.message
