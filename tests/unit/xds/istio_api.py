"""Field numbers of the published APIs, written out by hand from their .proto files.

Sources: istio/istio ``pkg/workloadapi/workload.proto`` and
``pkg/workloadapi/security/authorization.proto`` (mirrored by istio/ztunnel
``proto/``), istio/api ``security/v1alpha1/ca.proto``, envoyproxy data-plane-api
``envoy/service/discovery/v3/discovery.proto`` and ``envoy/config/core/v3/base.proto``.
The tests check our generated messages against these tables through an independent
decoder (``protoc --decode_raw``), so a wrong number in our .proto files fails.
"""

from __future__ import annotations

# Every field of each Istio message: our .proto must have exactly these.
ISTIO: dict[str, dict[str, int]] = {
    "istio.workload.Address": {"workload": 1, "service": 2},
    "istio.workload.Service": {
        "name": 1,
        "namespace": 2,
        "hostname": 3,
        "addresses": 4,
        "ports": 5,
        "subject_alt_names": 6,
        "waypoint": 7,
        "load_balancing": 8,
        "ip_families": 9,
        "extensions": 10,
        "canonical": 11,
        "ingress_use_waypoint": 12,
        "weighted_waypoints": 13,
        "visibility": 14,
    },
    "istio.workload.LoadBalancing": {"routing_preference": 1, "mode": 2, "health_policy": 3},
    "istio.workload.Workload": {
        "uid": 20,
        "name": 1,
        "namespace": 2,
        "addresses": 3,
        "hostname": 21,
        "network": 4,
        "tunnel_protocol": 5,
        "trust_domain": 6,
        "service_account": 7,
        "waypoint": 8,
        "network_gateway": 19,
        "node": 9,
        "canonical_name": 10,
        "canonical_revision": 11,
        "workload_type": 12,
        "workload_name": 13,
        "native_tunnel": 14,
        "application_tunnel": 23,
        "services": 22,
        "authorization_policies": 16,
        "status": 17,
        "cluster_id": 18,
        "locality": 24,
        "network_mode": 25,
        "extensions": 26,
        "capacity": 27,
    },
    "istio.workload.Locality": {"region": 1, "zone": 2, "subzone": 3},
    "istio.workload.PortList": {"ports": 1},
    "istio.workload.Port": {"service_port": 1, "target_port": 2, "app_protocol": 3},
    "istio.workload.ApplicationTunnel": {"protocol": 1, "port": 2},
    "istio.workload.GatewayAddress": {"hostname": 1, "address": 2, "hbone_mtls_port": 3},
    "istio.workload.WeightedWaypoint": {"destination": 1, "weight": 2},
    "istio.workload.NetworkAddress": {"network": 1, "address": 2, "length": 3},
    "istio.workload.NamespacedHostname": {"namespace": 1, "hostname": 2},
    "istio.workload.Extension": {"name": 1, "config": 2},
    "istio.security.Authorization": {
        "name": 1,
        "namespace": 2,
        "scope": 3,
        "action": 4,
        "groups": 5,
        "dry_run": 6,
        "extensions": 7,
    },
    "istio.security.Group": {"rules": 1},
    "istio.security.Rules": {"matches": 2},
    "istio.security.Match": {
        "namespaces": 1,
        "not_namespaces": 2,
        "service_accounts": 11,
        "not_service_accounts": 12,
        "principals": 3,
        "not_principals": 4,
        "source_ips": 5,
        "not_source_ips": 6,
        "destination_ips": 7,
        "not_destination_ips": 8,
        "destination_ports": 9,
        "not_destination_ports": 10,
        "extensions": 13,
    },
    "istio.security.Address": {"address": 1, "length": 2},
    "istio.security.ServiceAccountMatch": {"namespace": 1, "serviceAccount": 2},
    "istio.security.StringMatch": {"exact": 1, "prefix": 2, "suffix": 3, "presence": 4},
    "istio.v1.auth.IstioCertificateRequest": {"csr": 1, "validity_duration": 3, "metadata": 4},
    "istio.v1.auth.IstioCertificateResponse": {"cert_chain": 1},
}

# Enum values (name -> number) of the Istio enums.
ISTIO_ENUMS: dict[str, dict[str, int]] = {
    "istio.workload.TunnelProtocol": {"NONE": 0, "HBONE": 1, "LEGACY_ISTIO_MTLS": 2},
    "istio.workload.WorkloadStatus": {"HEALTHY": 0, "UNHEALTHY": 1},
    "istio.workload.WorkloadType": {"DEPLOYMENT": 0, "CRONJOB": 1, "POD": 2, "JOB": 3},
    "istio.workload.IPFamilies": {"AUTOMATIC": 0, "IPV4_ONLY": 1, "IPV6_ONLY": 2, "DUAL": 3},
    "istio.workload.NetworkMode": {"STANDARD": 0, "HOST_NETWORK": 1},
    "istio.workload.AppProtocol": {
        "UNKNOWN": 0,
        "HTTP11": 1,
        "HTTP2": 2,
        "GRPC": 3,
        "TCP": 4,
        "TLS": 5,
    },
    "istio.workload.ApplicationTunnel.Protocol": {"NONE": 0, "PROXY": 1},
    "istio.workload.Service.Visibility": {"PUBLIC": 0, "NAMESPACE": 1},
    "istio.workload.LoadBalancing.Scope": {
        "UNSPECIFIED_SCOPE": 0,
        "REGION": 1,
        "ZONE": 2,
        "SUBZONE": 3,
        "NODE": 4,
        "CLUSTER": 5,
        "NETWORK": 6,
    },
    "istio.workload.LoadBalancing.Mode": {
        "UNSPECIFIED_MODE": 0,
        "STRICT": 1,
        "FAILOVER": 2,
        "PASSTHROUGH": 3,
    },
    "istio.workload.LoadBalancing.HealthPolicy": {"ONLY_HEALTHY": 0, "ALLOW_ALL": 1},
    "istio.security.Scope": {"GLOBAL": 0, "NAMESPACE": 1, "WORKLOAD_SELECTOR": 2},
    "istio.security.Action": {"ALLOW": 0, "DENY": 1},
}

# The Envoy fields we carry (a subset: see core.proto and discovery.proto).
ENVOY: dict[str, dict[str, int]] = {
    "envoy.service.discovery.v3.DeltaDiscoveryRequest": {
        "node": 1,
        "type_url": 2,
        "resource_names_subscribe": 3,
        "resource_names_unsubscribe": 4,
        "resource_locators_subscribe": 8,
        "resource_locators_unsubscribe": 9,
        "initial_resource_versions": 5,
        "response_nonce": 6,
        "error_detail": 7,
    },
    "envoy.service.discovery.v3.DeltaDiscoveryResponse": {
        "system_version_info": 1,
        "resources": 2,
        "type_url": 4,
        "removed_resources": 6,
        "removed_resource_names": 8,
        "nonce": 5,
        "control_plane": 7,
        "resource_errors": 9,
    },
    "envoy.service.discovery.v3.DiscoveryRequest": {
        "version_info": 1,
        "node": 2,
        "resource_names": 3,
        "resource_locators": 7,
        "type_url": 4,
        "response_nonce": 5,
        "error_detail": 6,
    },
    "envoy.service.discovery.v3.DiscoveryResponse": {
        "version_info": 1,
        "resources": 2,
        "canary": 3,
        "type_url": 4,
        "nonce": 5,
        "control_plane": 6,
        "resource_errors": 7,
    },
    "envoy.service.discovery.v3.Resource": {
        "name": 3,
        "resource_name": 8,
        "aliases": 4,
        "version": 1,
        "resource": 2,
        "ttl": 6,
        "cache_control": 7,
        "metadata": 9,
    },
    "envoy.service.discovery.v3.Resource.CacheControl": {"do_not_cache": 1},
    "envoy.service.discovery.v3.ResourceLocator": {"name": 1, "dynamic_parameters": 2},
    "envoy.service.discovery.v3.ResourceName": {"name": 1},
    "envoy.service.discovery.v3.ResourceError": {"resource_name": 1, "error_detail": 2},
    # google.rpc.Status, carried by a wire-identical copy
    "envoy.service.discovery.v3.Status": {"code": 1, "message": 2, "details": 3},
    "envoy.config.core.v3.Node": {
        "id": 1,
        "cluster": 2,
        "metadata": 3,
        "locality": 4,
        "user_agent_name": 6,
        "user_agent_version": 7,
        "client_features": 10,
    },
    "envoy.config.core.v3.Locality": {"region": 1, "zone": 2, "sub_zone": 3},
    "envoy.config.core.v3.ControlPlane": {"identifier": 1},
    "envoy.config.core.v3.Metadata": {"filter_metadata": 1, "typed_filter_metadata": 2},
}

# Our own extension messages (no published counterpart; listed so every message is checked).
AMBIENT: dict[str, dict[str, int]] = {
    "ambient.xds.v1.WorkloadExtension": {"labels": 1, "external": 2, "workload_type": 3},
    "ambient.xds.v1.LabelSelector": {"match_labels": 1},
    "ambient.xds.v1.AuthorizationExtension": {"selector": 1, "audit": 2, "audit_groups": 3},
}

FIELD_NUMBERS = {**ISTIO, **ENVOY, **AMBIENT}
