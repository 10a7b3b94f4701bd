"""PeerAuthentication for ztunnel: which inbound ports refuse plaintext.

istiod implements STRICT for ambient as DENY policies that match connections
without a peer identity (``notPrincipals: [*]``): the shared
``<root>/istio_converted_static_strict`` for mesh/namespace/workload-wide STRICT, and
``converted_peer_authentication_<name>`` for workload policies with port-level
exceptions (istio/istio ``pilot/pkg/serviceregistry/ambient/authorization.go``:
``convertedSelectorPeerAuthentications``, ``convertPeerAuthentication``). This module
computes the same outcome directly as an ``EffectiveMtls`` per workload, and
``decide`` applies it as that DENY.

Precedence: workload (selector, in the workload's namespace) > namespace > mesh (root
namespace, no selector); UNSET inherits; the oldest policy wins a tie. In ambient
DISABLE is "not supported" (istio.io PeerAuthentication reference): istiod treats it
as PERMISSIVE, except that a port-level DISABLE under an UNSET workload mode that
inherits STRICT stays STRICT (istiod only looks for PERMISSIVE there). Where istiod
would leave a port-level STRICT unenforced (a PERMISSIVE workload policy under a
STRICT mesh policy with no namespace policy) this module enforces it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ambient.authz._spec import check_keys, fail, get_str, mapping, read_selector, type_name
from ambient.authz.model import Labels

if TYPE_CHECKING:
    from ambient.authz.conn import Workload
    from ambient.authz.store import PolicyStore

__all__ = [
    "STATIC_STRICT_POLICY_NAME",
    "EffectiveMtls",
    "Mode",
    "PeerAuthResult",
    "PeerAuthentication",
    "mtls_mode_for",
    "plaintext_allowed",
    "resolve_mtls",
    "translate_peer_authentication",
]

STATIC_STRICT_POLICY_NAME = "istio_converted_static_strict"


class Mode(enum.Enum):
    """``PeerAuthentication.MutualTLS.Mode``."""

    UNSET = "UNSET"
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


@dataclass(frozen=True, slots=True)
class PeerAuthentication:
    """A validated PeerAuthentication; ``created`` orders ties (oldest wins)."""

    name: str
    namespace: str
    mode: Mode = Mode.UNSET
    selector: Labels | None = None
    port_level: tuple[tuple[int, Mode], ...] = ()
    created: float = 0.0

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether the selector (if any) is a subset of ``labels``."""
        return self.selector is None or all(labels.get(k) == v for k, v in self.selector)


@dataclass(frozen=True, slots=True)
class PeerAuthResult:
    """The translated policy (None when Istio ignores it) and warnings."""

    policy: PeerAuthentication | None
    warnings: tuple[str, ...] = ()


def translate_peer_authentication(
    name: str,
    namespace: str,
    spec: Mapping[str, object],
    *,
    root_namespace: str = "istio-system",
    created: float = 0.0,
) -> PeerAuthResult:
    """Validate one PeerAuthentication; raise PolicyError if invalid."""
    if not isinstance(name, str) or not name:
        fail("metadata.name", "must be a non-empty string")
    if not isinstance(namespace, str) or not namespace:
        fail("metadata.namespace", "must be a non-empty string")
    spec = mapping(spec, "spec")
    check_keys(spec, ("selector", "mtls", "portLevelMtls"), "spec")
    key, warnings = f"{namespace}/{name}", []
    selector = read_selector(spec, "spec")
    if selector == ():
        warnings.append(f"{key}: selector without labels is treated as no selector")
        selector = None
    mode = _mode(spec.get("mtls"), "spec.mtls")
    port_level = _port_level(spec, selector is not None)
    modes = [mode, *(m for _, m in port_level)]
    if Mode.DISABLE in modes:
        warnings.append(
            f"{key}: DISABLE is not supported in ambient mode; ztunnel accepts plaintext "
            "as with PERMISSIVE (and traffic between ambient workloads stays mTLS)"
        )
    if selector is not None and namespace == root_namespace:
        warnings.append(
            f"{key}: ignored: a PeerAuthentication with a selector in the root namespace"
        )
        return PeerAuthResult(None, tuple(warnings))
    pa = PeerAuthentication(name, namespace, mode, selector, port_level, created)
    return PeerAuthResult(pa, tuple(warnings))


def _mode(value: object, path: str) -> Mode:
    """A ``MutualTLS`` body (``{mode: STRICT}``); null or no mode means UNSET."""
    if value is None:
        return Mode.UNSET
    body = mapping(value, path)
    check_keys(body, ("mode",), path)
    mode = get_str(body, "mode", path) or "UNSET"
    if mode not in Mode.__members__:
        fail(
            f"{path}.mode", f"invalid mode {mode!r}; expected one of: {', '.join(Mode.__members__)}"
        )
    return Mode[mode]


def _port_level(spec: Mapping[str, object], has_selector: bool) -> tuple[tuple[int, Mode], ...]:
    ports = spec.get("portLevelMtls")
    if ports is None:
        return ()
    if not isinstance(ports, Mapping):
        fail("spec.portLevelMtls", f"expected a mapping, got {type_name(ports)}")
    if not has_selector:
        fail("spec.portLevelMtls", "mesh/namespace PeerAuthentication cannot have port level mTLS")
    if not ports:
        fail("spec.portLevelMtls", "port level mTLS, if defined, must have at least one element")
    out: dict[int, Mode] = {}
    for raw, value in ports.items():
        path = f"spec.portLevelMtls[{raw}]"
        text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
        if (
            not isinstance(text, str)
            or not (text.isascii() and text.isdigit() and len(text) <= 5)
            or not 1 <= int(text) <= 65535
        ):
            fail(path, f"invalid port {raw!r}: must be a number in 1..65535")
        if int(text) in out:
            fail(path, f"port {int(text)} is listed twice")
        out[int(text)] = _mode(value, path)
    return tuple(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class EffectiveMtls:
    """Whether plaintext is refused, per port; ``policy`` names the DENY that refuses it."""

    strict: bool = False
    ports: tuple[tuple[int, bool], ...] = ()
    policy: str | None = None

    def strict_for(self, port: int) -> bool:
        """Whether ``port`` requires a peer identity."""
        for p, strict in self.ports:
            if p == port:
                return strict
        return self.strict


def resolve_mtls(
    mesh: PeerAuthentication | None,
    namespace: PeerAuthentication | None,
    workload: PeerAuthentication | None,
    *,
    root_namespace: str,
) -> EffectiveMtls:
    """Combine the three levels as istiod does for ambient (see module docstring)."""
    inherited = False
    for level in (mesh, namespace):
        if level is not None and level.mode is not Mode.UNSET:
            inherited = level.mode is Mode.STRICT
    static = f"{root_namespace}/{STATIC_STRICT_POLICY_NAME}"
    if workload is None:
        return EffectiveMtls(inherited, (), static if inherited else None)
    top = inherited if workload.mode is Mode.UNSET else workload.mode is Mode.STRICT
    ports = []
    for port, mode in workload.port_level:
        if mode is Mode.STRICT:
            ports.append((port, True))
        elif mode is Mode.PERMISSIVE or (mode is Mode.DISABLE and workload.mode is not Mode.UNSET):
            ports.append((port, False))
        elif mode is Mode.DISABLE:
            ports.append((port, top))
    ports = [(port, strict) for port, strict in ports if strict != top]
    if not ports:
        return EffectiveMtls(top, (), static if top else None)
    converted = f"{workload.namespace}/converted_peer_authentication_{workload.name}"
    return EffectiveMtls(top, tuple(ports), converted)


def mtls_mode_for(store: PolicyStore, workload: Workload, port: int) -> Mode:
    """The effective inbound mode for ``port``: STRICT or PERMISSIVE (never UNSET/DISABLE)."""
    strict = store.effective_mtls(workload).strict_for(port)
    return Mode.STRICT if strict else Mode.PERMISSIVE


def plaintext_allowed(store: PolicyStore, workload: Workload, port: int) -> bool:
    """Whether a connection without a peer identity may reach ``port``."""
    return not store.effective_mtls(workload).strict_for(port)
