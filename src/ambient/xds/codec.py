"""Conversion between ambient's typed values and Istio's xDS messages.

``workload_to_proto``/``service_to_proto`` build ``istio.workload.Address`` resources
(named by uid and by ``namespace/hostname``), ``authorization_to_proto`` builds
``istio.security.Authorization`` (named ``namespace/name``), and the ``*_from_proto``
functions read them back. Encoding then decoding gives back an equal value (IP
waypoints in canonical text; an empty trust domain or service account, which Istio
reads as the default, aside).

Istio's fields are used wherever they exist. What ambient carries beyond them goes
in Istio's own extension mechanism (``extensions``: a name and an Any, ignored by
istiod and ztunnel when the name is unknown), see ``proto/extensions.proto``:

- ``Workload.labels``, ``Workload.local`` (as ``external``) and a ``workload_type``
  Istio's enum has no value for (``workloadentry`` is sent as POD, as istiod does):
  extension ``ambient.io/workload``.
- ``Authorization.selector``: extension ``ambient.io/authorization``. Istio's way to
  attach a WORKLOAD_SELECTOR policy is by name, in the workloads'
  ``authorization_policies`` (``ambient.xds.policies.workload_policy_keys`` computes
  them); a policy without the extension (every one istiod sends) decodes with
  ``BY_NAME_SELECTOR``, which no labels satisfy.
- ``Action.AUDIT``: Istio has no AUDIT and istiod never sends one. It goes as a DENY
  with no groups, which matches nothing on any ztunnel, its groups in the extension.

Decoding rejects (``DecodeError``) what ambient cannot represent faithfully: an empty
Address or StringMatch, a tunnel protocol, workload type, scope or action value it
does not know, IP bytes that are not 4 or 16 long, values the model refuses. Istio
fields the model has no place for are ignored: Workload ``hostname``,
``network_gateway``, ``native_tunnel``, ``locality``, ``network_mode``, ``capacity``,
``application_tunnel.port``; Service ``ip_families``, ``canonical``,
``ingress_use_waypoint``, ``weighted_waypoints``, ``visibility`` and the contents of
``load_balancing`` (present means STANDARD); networks and
prefix lengths of service addresses. Empty ``trust_domain``/``service_account``
decode as ``cluster.local``/``default``, as in ztunnel.

``WaypointResource`` (ambient's own type, ``WAYPOINT_TYPE_URL``) is one L7 object's
manifest as JSON; the receiving waypoint host validates it with the config loader.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import TypeVar

from google.protobuf import any_pb2
from google.protobuf.message import Message

from ambient.authz.model import (
    Action,
    Authorization,
    Group,
    IPNetwork,
    Match,
    MatchKind,
    Rules,
    Scope,
    ServiceAccountMatch,
    StringMatch,
    labels_key,
)
from ambient.config.frozen import FrozenMap
from ambient.identity.spiffe import DEFAULT_TRUST_DOMAIN
from ambient.state.workload import (
    ApplicationTunnel,
    AppProtocol,
    GatewayAddress,
    IPAddress,
    LoadBalancingMode,
    Port,
    Service,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
)
from ambient.xds.policies import BY_NAME_SELECTOR
from ambient.xds.proto import authorization_pb2 as authz_pb
from ambient.xds.proto import extensions_pb2 as ext_pb
from ambient.xds.proto import workload_pb2 as wl_pb

__all__ = [
    "ADDRESS_TYPE_URL",
    "AUTHORIZATION_EXTENSION",
    "AUTHORIZATION_TYPE_URL",
    "BY_NAME_SELECTOR",
    "WAYPOINT_TYPE_URL",
    "WORKLOAD_EXTENSION",
    "DecodeError",
    "address_from_proto",
    "authorization_from_proto",
    "authorization_to_proto",
    "service_to_proto",
    "waypoint_resource_to_proto",
    "workload_to_proto",
]

ADDRESS_TYPE_URL = "type.googleapis.com/istio.workload.Address"
AUTHORIZATION_TYPE_URL = "type.googleapis.com/istio.security.Authorization"
# ambient's own type (not Istio's): the L7 objects waypoints enforce, one per resource.
WAYPOINT_TYPE_URL = "type.googleapis.com/ambient.xds.v1.WaypointResource"
WORKLOAD_EXTENSION = "ambient.io/workload"
AUTHORIZATION_EXTENSION = "ambient.io/authorization"
DEFAULT_SERVICE_ACCOUNT = "default"

_M = TypeVar("_M", bound=Message)
_K = TypeVar("_K")
_T = TypeVar("_T")


class DecodeError(ValueError):
    """A message ambient cannot represent (an xDS client NACKs it with this text)."""


_TUNNEL = {TunnelProtocol.NONE: wl_pb.NONE, TunnelProtocol.HBONE: wl_pb.HBONE}
_TUNNEL_BACK = {v: k for k, v in _TUNNEL.items()}
_STATUS = {WorkloadStatus.HEALTHY: wl_pb.HEALTHY, WorkloadStatus.UNHEALTHY: wl_pb.UNHEALTHY}
_STATUS_BACK = {v: k for k, v in _STATUS.items()}
_WORKLOAD_TYPE = {
    "deployment": wl_pb.DEPLOYMENT,
    "cronjob": wl_pb.CRONJOB,
    "pod": wl_pb.POD,
    "job": wl_pb.JOB,
}
_WORKLOAD_TYPE_BACK = {v: k for k, v in _WORKLOAD_TYPE.items()}
_SCOPE = {
    Scope.GLOBAL: authz_pb.GLOBAL,
    Scope.NAMESPACE: authz_pb.NAMESPACE,
    Scope.WORKLOAD_SELECTOR: authz_pb.WORKLOAD_SELECTOR,
}
_SCOPE_BACK = {v: k for k, v in _SCOPE.items()}
_ACTION = {Action.ALLOW: authz_pb.ALLOW, Action.DENY: authz_pb.DENY}
_ACTION_BACK = {v: k for k, v in _ACTION.items()}


def _lookup(table: Mapping[_K, _T], value: _K, what: str) -> _T:
    try:
        return table[value]
    except KeyError:
        raise DecodeError(f"unsupported {what} {value}") from None


# --- shared pieces -----------------------------------------------------------------


def _ip(raw: bytes, what: str) -> IPAddress:
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw)
    if len(raw) == 16:
        return ipaddress.IPv6Address(raw)
    raise DecodeError(f"{what}: {len(raw)} bytes is not an IPv4 or IPv6 address")


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def _extension(extensions: Iterable[wl_pb.Extension], name: str, into: type[_M]) -> _M:
    """The first extension called ``name``, unpacked; an empty message if there is none."""
    found = into()
    for ext in extensions:
        if ext.name == name:
            if not ext.config.Unpack(found):
                raise DecodeError(
                    f"extension {name} carries {ext.config.type_url}, "
                    f"not {into.DESCRIPTOR.full_name}"
                )
            break
    return found


def _ports_to_proto(ports: Iterable[Port]) -> list[wl_pb.Port]:
    return [
        wl_pb.Port(
            service_port=p.service_port,
            target_port=p.target_port,
            app_protocol=p.app_protocol.value,  # the enum value's name
        )
        for p in ports
    ]


def _ports_from_proto(ports: Iterable[wl_pb.Port]) -> tuple[Port, ...]:
    return tuple(Port(p.service_port, p.target_port, _app_protocol(p.app_protocol)) for p in ports)


def _app_protocol(value: int) -> AppProtocol:
    """An unknown number (a newer istiod's) reads as UNKNOWN: the port is then detected."""
    try:
        return AppProtocol(wl_pb.AppProtocol.Name(value))
    except ValueError:
        return AppProtocol.UNKNOWN


def _gateway_to_proto(gateway: GatewayAddress, network: str) -> wl_pb.GatewayAddress:
    out = wl_pb.GatewayAddress(hbone_mtls_port=gateway.hbone_mtls_port)
    try:
        ip = ipaddress.ip_address(gateway.destination)
    except ValueError:
        namespace, slash, hostname = gateway.destination.partition("/")
        if not (slash and namespace and hostname):
            raise ValueError(
                f"waypoint {gateway.destination!r} is neither an IP nor namespace/hostname"
            ) from None
        out.hostname.namespace, out.hostname.hostname = namespace, hostname
    else:
        out.address.network, out.address.address = network, ip.packed
    return out


def _gateway_from_proto(gateway: wl_pb.GatewayAddress) -> GatewayAddress:
    kind = gateway.WhichOneof("destination")
    if kind == "hostname":
        destination = f"{gateway.hostname.namespace}/{gateway.hostname.hostname}"
    elif kind == "address":
        destination = str(_ip(gateway.address.address, "waypoint address"))
    else:
        raise DecodeError("a waypoint with neither a hostname nor an address")
    return GatewayAddress(destination, gateway.hbone_mtls_port)


# --- workloads and services ----------------------------------------------------------


def workload_to_proto(workload: Workload) -> wl_pb.Address:
    """The ``istio.workload.Address`` resource of ``workload`` (named by its uid)."""
    w = workload
    out = wl_pb.Workload(
        uid=w.uid,
        name=w.name,
        namespace=w.namespace,
        addresses=[ip.packed for ip in w.addresses],
        network=w.network,
        tunnel_protocol=_TUNNEL[w.tunnel_protocol],
        trust_domain=w.trust_domain,
        service_account=w.service_account,
        node=w.node,
        canonical_name=w.canonical_name,
        canonical_revision=w.canonical_revision,
        workload_type=_WORKLOAD_TYPE.get(w.workload_type, wl_pb.POD),
        workload_name=w.workload_name,
        authorization_policies=list(w.authorization_policies),
        status=_STATUS[w.status],
        cluster_id=w.cluster_id,
    )
    for key, ports in w.services.items():
        out.services[key].ports.extend(_ports_to_proto(ports))
    if w.waypoint is not None:
        out.waypoint.CopyFrom(_gateway_to_proto(w.waypoint, w.network))
    if w.application_tunnel is ApplicationTunnel.PROXY:
        out.application_tunnel.protocol = wl_pb.ApplicationTunnel.PROXY
    ext = ext_pb.WorkloadExtension(labels=dict(w.labels), external=not w.local)
    if w.workload_type not in _WORKLOAD_TYPE:
        ext.workload_type = w.workload_type  # optional: present even when empty
    if ext.ByteSize():
        out.extensions.add(name=WORKLOAD_EXTENSION, config=_pack(ext))
    return wl_pb.Address(workload=out)


def service_to_proto(service: Service) -> wl_pb.Address:
    """The ``istio.workload.Address`` resource of ``service`` (named ``namespace/hostname``)."""
    s = service
    out = wl_pb.Service(
        name=s.name,
        namespace=s.namespace,
        hostname=s.hostname,
        addresses=[wl_pb.NetworkAddress(address=ip.packed) for ip in s.addresses],
        ports=_ports_to_proto(s.ports),
        subject_alt_names=list(s.subject_alt_names),
    )
    if s.waypoint is not None:
        out.waypoint.CopyFrom(_gateway_to_proto(s.waypoint, ""))
    if s.load_balancing is LoadBalancingMode.STANDARD:
        out.load_balancing.SetInParent()
    return wl_pb.Address(service=out)


def _workload_from_proto(w: wl_pb.Workload) -> Workload:
    ext = _extension(w.extensions, WORKLOAD_EXTENSION, ext_pb.WorkloadExtension)
    if ext.HasField("workload_type"):
        workload_type = ext.workload_type
    else:
        workload_type = _lookup(_WORKLOAD_TYPE_BACK, w.workload_type, "workload type")
    tunnel = w.application_tunnel.protocol
    if tunnel not in (wl_pb.ApplicationTunnel.NONE, wl_pb.ApplicationTunnel.PROXY):
        raise DecodeError(f"unsupported application tunnel protocol {tunnel}")
    return Workload(
        uid=w.uid,
        name=w.name,
        namespace=w.namespace,
        addresses=tuple(_ip(a, "workload address") for a in w.addresses),
        service_account=w.service_account or DEFAULT_SERVICE_ACCOUNT,
        node=w.node,
        tunnel_protocol=_lookup(_TUNNEL_BACK, w.tunnel_protocol, "tunnel protocol"),
        trust_domain=w.trust_domain or DEFAULT_TRUST_DOMAIN,
        cluster_id=w.cluster_id,
        network=w.network,
        workload_name=w.workload_name,
        workload_type=workload_type,
        canonical_name=w.canonical_name,
        canonical_revision=w.canonical_revision,
        services=FrozenMap((k, _ports_from_proto(v.ports)) for k, v in w.services.items()),
        waypoint=_gateway_from_proto(w.waypoint) if w.HasField("waypoint") else None,
        status=_lookup(_STATUS_BACK, w.status, "workload status"),
        labels=FrozenMap(ext.labels),
        authorization_policies=tuple(w.authorization_policies),
        local=not ext.external,
        application_tunnel=(
            ApplicationTunnel.PROXY
            if tunnel == wl_pb.ApplicationTunnel.PROXY
            else ApplicationTunnel.NONE
        ),
    )


def _service_from_proto(s: wl_pb.Service) -> Service:
    return Service(
        name=s.name,
        namespace=s.namespace,
        hostname=s.hostname,
        addresses=tuple(_ip(a.address, "service address") for a in s.addresses),
        ports=_ports_from_proto(s.ports),
        subject_alt_names=tuple(s.subject_alt_names),
        waypoint=_gateway_from_proto(s.waypoint) if s.HasField("waypoint") else None,
        load_balancing=(
            LoadBalancingMode.STANDARD
            if s.HasField("load_balancing")
            else LoadBalancingMode.UNSPECIFIED
        ),
    )


def address_from_proto(address: wl_pb.Address) -> Workload | Service:
    """The workload or service an ``istio.workload.Address`` describes."""
    kind = address.WhichOneof("type")
    try:
        if kind == "workload":
            return _workload_from_proto(address.workload)
        if kind == "service":
            return _service_from_proto(address.service)
    except DecodeError as exc:
        raise DecodeError(f"{kind} {_address_name(address)}: {exc}") from None
    except ValueError as exc:
        raise DecodeError(f"{kind} {_address_name(address)}: {exc}") from exc
    raise DecodeError("an Address with neither a workload nor a service")


def _address_name(address: wl_pb.Address) -> str:
    if address.HasField("workload"):
        return address.workload.uid or address.workload.name
    return f"{address.service.namespace}/{address.service.hostname}"


# --- authorization -------------------------------------------------------------------


def _string_to_proto(m: StringMatch) -> authz_pb.StringMatch:
    out = authz_pb.StringMatch()
    if m.kind is MatchKind.EXACT:
        out.exact = m.value
    elif m.kind is MatchKind.PREFIX:
        out.prefix = m.value
    elif m.kind is MatchKind.SUFFIX:
        out.suffix = m.value
    else:
        out.presence.SetInParent()
    return out


def _string_from_proto(m: authz_pb.StringMatch) -> StringMatch:
    kind = m.WhichOneof("match_type")
    if kind == "exact":
        return StringMatch(MatchKind.EXACT, m.exact)
    if kind == "prefix":
        return StringMatch(MatchKind.PREFIX, m.prefix)
    if kind == "suffix":
        return StringMatch(MatchKind.SUFFIX, m.suffix)
    if kind == "presence":
        return StringMatch(MatchKind.PRESENCE)
    raise DecodeError("a StringMatch with no match type")


def _strings_to_proto(matches: Iterable[StringMatch]) -> list[authz_pb.StringMatch]:
    return [_string_to_proto(m) for m in matches]


def _strings_from_proto(matches: Iterable[authz_pb.StringMatch]) -> tuple[StringMatch, ...]:
    return tuple(_string_from_proto(m) for m in matches)


def _accounts_to_proto(
    accounts: Iterable[ServiceAccountMatch],
) -> list[authz_pb.ServiceAccountMatch]:
    return [
        authz_pb.ServiceAccountMatch(namespace=a.namespace, serviceAccount=a.service_account)
        for a in accounts
    ]


def _accounts_from_proto(
    accounts: Iterable[authz_pb.ServiceAccountMatch],
) -> tuple[ServiceAccountMatch, ...]:
    return tuple(ServiceAccountMatch(a.namespace, a.serviceAccount) for a in accounts)


def _networks_to_proto(networks: Iterable[IPNetwork]) -> list[authz_pb.Address]:
    return [
        authz_pb.Address(address=n.network_address.packed, length=n.prefixlen) for n in networks
    ]


def _networks_from_proto(addresses: Iterable[authz_pb.Address]) -> tuple[IPNetwork, ...]:
    # Host bits are dropped, as ztunnel's prefix match ignores them.
    return tuple(
        ipaddress.ip_network((_ip(a.address, "policy address"), a.length), strict=False)
        for a in addresses
    )


def _match_to_proto(m: Match) -> authz_pb.Match:
    return authz_pb.Match(
        namespaces=_strings_to_proto(m.namespaces),
        not_namespaces=_strings_to_proto(m.not_namespaces),
        service_accounts=_accounts_to_proto(m.service_accounts),
        not_service_accounts=_accounts_to_proto(m.not_service_accounts),
        principals=_strings_to_proto(m.principals),
        not_principals=_strings_to_proto(m.not_principals),
        source_ips=_networks_to_proto(m.source_ips),
        not_source_ips=_networks_to_proto(m.not_source_ips),
        destination_ips=_networks_to_proto(m.destination_ips),
        not_destination_ips=_networks_to_proto(m.not_destination_ips),
        destination_ports=list(m.destination_ports),
        not_destination_ports=list(m.not_destination_ports),
    )


def _match_from_proto(m: authz_pb.Match) -> Match:
    return Match(
        namespaces=_strings_from_proto(m.namespaces),
        not_namespaces=_strings_from_proto(m.not_namespaces),
        service_accounts=_accounts_from_proto(m.service_accounts),
        not_service_accounts=_accounts_from_proto(m.not_service_accounts),
        principals=_strings_from_proto(m.principals),
        not_principals=_strings_from_proto(m.not_principals),
        source_ips=_networks_from_proto(m.source_ips),
        not_source_ips=_networks_from_proto(m.not_source_ips),
        destination_ips=_networks_from_proto(m.destination_ips),
        not_destination_ips=_networks_from_proto(m.not_destination_ips),
        destination_ports=tuple(m.destination_ports),
        not_destination_ports=tuple(m.not_destination_ports),
    )


def _group_to_proto(g: Group) -> authz_pb.Group:
    return authz_pb.Group(
        rules=[authz_pb.Rules(matches=[_match_to_proto(m) for m in r.matches]) for r in g.rules]
    )


def _group_from_proto(g: authz_pb.Group) -> Group:
    return Group(tuple(Rules(tuple(_match_from_proto(m) for m in r.matches)) for r in g.rules))


def authorization_to_proto(policy: Authorization) -> authz_pb.Authorization:
    """The ``istio.security.Authorization`` resource of ``policy`` (named ``namespace/name``)."""
    groups = [_group_to_proto(g) for g in policy.groups]
    audit = policy.action is Action.AUDIT
    out = authz_pb.Authorization(
        name=policy.name,
        namespace=policy.namespace,
        scope=_SCOPE[policy.scope],
        action=authz_pb.DENY if audit else _ACTION[policy.action],
        groups=[] if audit else groups,
        dry_run=policy.dry_run,
    )
    ext = ext_pb.AuthorizationExtension(audit=audit, audit_groups=groups if audit else [])
    if policy.selector is not None and policy.selector != BY_NAME_SELECTOR:
        ext.selector.SetInParent()  # present even when empty: selects the whole namespace
        ext.selector.match_labels.update(dict(policy.selector))
    if ext.ByteSize():
        out.extensions.add(name=AUTHORIZATION_EXTENSION, config=_pack(ext))
    return out


def authorization_from_proto(policy: authz_pb.Authorization) -> Authorization:
    """The ``Authorization`` an ``istio.security.Authorization`` describes."""
    try:
        return _authorization_from_proto(policy)
    except DecodeError as exc:
        raise DecodeError(f"authorization {policy.namespace}/{policy.name}: {exc}") from None
    except ValueError as exc:
        raise DecodeError(f"authorization {policy.namespace}/{policy.name}: {exc}") from exc


def _authorization_from_proto(policy: authz_pb.Authorization) -> Authorization:
    ext = _extension(policy.extensions, AUTHORIZATION_EXTENSION, ext_pb.AuthorizationExtension)
    scope = _lookup(_SCOPE_BACK, policy.scope, "scope")
    action = _lookup(_ACTION_BACK, policy.action, "action")
    wire_groups = policy.groups
    if ext.audit:
        if action is not Action.DENY or wire_groups:
            raise DecodeError("an AUDIT policy must be sent as a DENY without groups")
        action, wire_groups = Action.AUDIT, ext.audit_groups
    elif ext.audit_groups:
        raise DecodeError("audit groups on a policy that is not AUDIT")
    if scope is not Scope.WORKLOAD_SELECTOR:
        if ext.HasField("selector"):
            raise DecodeError(f"a selector on a {scope.value} policy")
        selector = None
    elif ext.HasField("selector"):
        selector = labels_key(ext.selector.match_labels)
    else:
        selector = BY_NAME_SELECTOR
    return Authorization(
        name=policy.name,
        namespace=policy.namespace,
        scope=scope,
        action=action,
        groups=tuple(_group_from_proto(g) for g in wire_groups),
        dry_run=policy.dry_run,
        selector=selector,
    )


def waypoint_resource_to_proto(manifest_json: str) -> ext_pb.WaypointResource:
    """The ``WaypointResource`` of one L7 object's manifest (JSON text)."""
    return ext_pb.WaypointResource(manifest_json=manifest_json)
