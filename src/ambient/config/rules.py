"""String rules from Kubernetes and Istio: names, label keys and values, addresses.

Each rule takes a string and returns ``None`` when it is valid, or a short
problem description (one line, naming the offending value) when it is not.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

__all__ = [
    "CLUSTER_DOMAIN",
    "Rule",
    "cidr",
    "dns1035_label",
    "dns1123_label",
    "dns1123_subdomain",
    "env_var_name",
    "hostname",
    "iana_svc_name",
    "ip_address",
    "ip_or_cidr",
    "label_key",
    "label_value",
    "not_empty",
    "workload_address",
]

CLUSTER_DOMAIN = "cluster.local"  # a Service is <name>.<namespace>.svc.<this>

Rule = Callable[[str], str | None]

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(_LABEL)
_DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_ENV_VAR_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def not_empty(value: str) -> str | None:
    """The value is not the empty string."""
    return "must not be empty" if value == "" else None


def dns1123_label(value: str) -> str | None:
    """An RFC 1123 label: namespace names, container names, port names."""
    if len(value) <= 63 and _DNS1123_LABEL.fullmatch(value):
        return None
    return (
        f"invalid name {value!r}: must be a lowercase RFC 1123 label (at most 63 lowercase "
        "letters, digits and '-', starting and ending with a letter or digit)"
    )


def dns1123_subdomain(value: str) -> str | None:
    """An RFC 1123 subdomain: the name of most Kubernetes objects."""
    if len(value) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(value):
        return None
    return (
        f"invalid name {value!r}: must be a lowercase RFC 1123 subdomain (at most 253 lowercase "
        "letters, digits, '-' and '.', starting and ending with a letter or digit)"
    )


def dns1035_label(value: str) -> str | None:
    """An RFC 1035 label: Service names (they become DNS names)."""
    if len(value) <= 63 and _DNS1035_LABEL.fullmatch(value):
        return None
    return (
        f"invalid name {value!r}: must be an RFC 1035 label (at most 63 lowercase letters, "
        "digits and '-', starting with a letter and ending with a letter or digit)"
    )


def _qualified_name_problem(value: str) -> str | None:
    prefix, slash, name = value.rpartition("/")
    if slash:
        if not prefix:
            return "the prefix before '/' must not be empty"
        if len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            return "the prefix before '/' must be a lowercase RFC 1123 subdomain"
    if not name:
        return "the name part must not be empty"
    if len(name) > 63:
        return "the name part must be at most 63 characters"
    if not _QUALIFIED_NAME.fullmatch(name):
        return (
            "the name part must consist of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def label_key(value: str) -> str | None:
    """A label or annotation key: ``[prefix/]name`` as Kubernetes defines it."""
    problem = _qualified_name_problem(value)
    return None if problem is None else f"invalid key {value!r}: {problem}"


def label_value(value: str) -> str | None:
    """A label value: empty, or up to 63 letters, digits, '-', '_', '.' (alphanumeric ends)."""
    if value == "" or (len(value) <= 63 and _QUALIFIED_NAME.fullmatch(value)):
        return None
    return (
        f"invalid label value {value!r}: must be at most 63 letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit"
    )


def iana_svc_name(value: str) -> str | None:
    """A named port: at most 15 lowercase letters, digits and '-', with at least one letter."""
    if (
        len(value) <= 15
        and _IANA_SVC_NAME.fullmatch(value)
        and "--" not in value
        and any(c.isalpha() for c in value)
    ):
        return None
    return (
        f"invalid port name {value!r}: must be at most 15 lowercase letters, digits and '-', "
        "with at least one letter, no '--', starting and ending with a letter or digit"
    )


def env_var_name(value: str) -> str | None:
    """An environment variable name as Kubernetes accepts it."""
    if _ENV_VAR_NAME.fullmatch(value):
        return None
    return (
        f"invalid environment variable name {value!r}: must consist of letters, digits, "
        "'_', '-' or '.', and must not start with a digit"
    )


def ip_address(value: str) -> str | None:
    """An IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"invalid IP address {value!r}"
    return None


def cidr(value: str) -> str | None:
    """An IPv4 or IPv6 prefix such as ``10.0.0.0/8`` (host bits are allowed, as in Istio)."""
    if "/" in value:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
        else:
            return None
    return f"invalid CIDR {value!r}: expected an address and a prefix length, e.g. '10.0.0.0/8'"


def ip_or_cidr(value: str) -> str | None:
    """An IP address or a CIDR prefix, as in ``ServiceEntry.spec.addresses``."""
    if ip_address(value) is None or cidr(value) is None:
        return None
    return f"invalid address {value!r}: expected an IP address or a CIDR such as '10.0.0.0/8'"


def hostname(value: str) -> str | None:
    """A DNS name, optionally starting with a ``*.`` wildcard (Istio service hosts)."""
    labels = value.removeprefix("*.").split(".")
    if value == "*":
        return "invalid host '*': a ServiceEntry host must not be only a wildcard"
    if len(value) > 255 or not all(len(p) <= 63 and _HOST_LABEL.fullmatch(p) for p in labels):
        return (
            f"invalid host {value!r}: expected a DNS name such as 'api.example.com', "
            "optionally starting with '*.'"
        )
    return None


def workload_address(value: str) -> str | None:
    """A workload's address: an IP address, a DNS name, or ``unix://<path>``."""
    if value.startswith("unix://") and len(value) > len("unix://"):
        return None
    if ip_address(value) is None:
        return None
    if not value.startswith("*") and hostname(value) is None:
        return None
    return f"invalid address {value!r}: expected an IP address, a DNS name or unix://<path>"
