"""Strict readers for Kubernetes-style policy specs: every error names its field path."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import NoReturn

from ambient.authz.model import IPNetwork, Labels

__all__ = [
    "PolicyError",
    "check_keys",
    "check_path_template",
    "fail",
    "get_list",
    "get_mapping",
    "get_str",
    "mapping",
    "parse_ip_block",
    "parse_port",
    "read_selector",
    "str_list",
    "type_name",
]

_PORT_RE = re.compile(r"[0-9]+")
_PATH_LITERAL_RE = re.compile(r"[A-Za-z0-9\-._~%!$&'()+,;:@=]+")


class PolicyError(ValueError):
    """A policy is invalid; ``path`` names the offending field, e.g. ``spec.rules[0].to``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def fail(path: str, message: str) -> NoReturn:
    """Raise a PolicyError for ``path``."""
    raise PolicyError(path, message)


def type_name(value: object) -> str:
    """A YAML-ish name for the type of ``value``, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, Sequence):
        return "list"
    return type(value).__name__


def mapping(value: object, path: str) -> Mapping[str, object]:
    """``value`` as a mapping with string keys, or a PolicyError."""
    if not isinstance(value, Mapping):
        fail(path, f"expected a mapping, got {type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            fail(path, f"keys must be strings, got {type_name(key)} {key!r}")
    return value


def check_keys(value: Mapping[str, object], allowed: Sequence[str], path: str) -> None:
    """Reject fields that are not in ``allowed`` (catches typos like ``principal``)."""
    for key in value:
        if key not in allowed:
            fail(f"{path}.{key}", f"unknown field {key!r}; expected one of: {', '.join(allowed)}")


def get_mapping(value: Mapping[str, object], key: str, path: str) -> Mapping[str, object] | None:
    """The optional mapping field ``key`` (null counts as absent)."""
    item = value.get(key)
    return None if item is None else mapping(item, f"{path}.{key}")


def get_str(value: Mapping[str, object], key: str, path: str) -> str | None:
    """The optional string field ``key`` (null counts as absent)."""
    item = value.get(key)
    if item is None:
        return None
    if not isinstance(item, str):
        fail(f"{path}.{key}", f"expected a string, got {type_name(item)}")
    return item


def get_list(value: Mapping[str, object], key: str, path: str) -> list[object] | None:
    """The optional list field ``key`` (null counts as absent; ``[]`` is kept)."""
    item = value.get(key)
    if item is None:
        return None
    if isinstance(item, str | bytes) or not isinstance(item, Sequence):
        fail(f"{path}.{key}", f"expected a list, got {type_name(item)}")
    return list(item)


def str_list(value: Mapping[str, object], key: str, path: str) -> tuple[str, ...]:
    """The optional list of non-empty strings ``key``."""
    items = get_list(value, key, path) or []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            fail(f"{path}.{key}[{i}]", f"expected a string, got {type_name(item)}")
        if not item:
            fail(f"{path}.{key}[{i}]", "empty value not allowed")
    return tuple(str(item) for item in items)


def check_path_template(value: str, path: str) -> None:
    """Istio's checks of a policy path using ``{*}``/``{**}`` templates.

    A template operator is a whole segment, ``{**}`` is the last operator, and the
    other segments of a templated path are plain RFC 3986 path characters.
    """
    templated = "{*}" in value or "{**}" in value
    seen_any = False
    for segment in value.strip("/").split("/"):
        if segment in ("{*}", "{**}"):
            if seen_any:
                fail(path, f"invalid path {value!r}: {{**}} must be the last template operator")
            seen_any = segment == "{**}"
        elif "{" in segment or "}" in segment:
            fail(
                path,
                f"invalid path {value!r}: '{{' and '}}' are only allowed as whole-segment "
                "{*} or {**} templates",
            )
        elif templated and not _PATH_LITERAL_RE.fullmatch(segment):
            fail(path, f"invalid path {value!r}: segment {segment!r} is not a valid literal")


def parse_port(value: str, path: str) -> int:
    """A port string in 1..65535."""
    if not _PORT_RE.fullmatch(value) or not 1 <= int(value) <= 65535:
        fail(path, f"invalid port {value!r}: must be a number in 1..65535")
    return int(value)


def parse_ip_block(value: str, path: str) -> tuple[IPNetwork, str | None]:
    """An IP or CIDR; host bits are masked off as ztunnel does (with a note)."""
    try:
        if "/" not in value:
            address = ipaddress.ip_address(value)
            if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
                raise ValueError("zone ids are not allowed")
            return ipaddress.ip_network(address), None
        host, _, bits = value.partition("/")
        if not _PORT_RE.fullmatch(bits):
            raise ValueError("the prefix length must be a number")
        network = ipaddress.ip_network(value, strict=False)
        masked = ipaddress.ip_address(host) != network.network_address
    except ValueError as exc:
        fail(path, f"invalid IP address or CIDR {value!r}: {exc}")
    note = f"{path}: {value!r} has host bits set; enforced as {network}" if masked else None
    return network, note


def read_selector(spec: Mapping[str, object], path: str) -> Labels | None:
    """``selector.matchLabels`` as sorted pairs; None when no selector is given."""
    selector = get_mapping(spec, "selector", path)
    if selector is None:
        return None
    spath = f"{path}.selector"
    check_keys(selector, ("matchLabels",), spath)
    labels = get_mapping(selector, "matchLabels", spath) or {}
    for key, val in labels.items():
        lpath = f"{spath}.matchLabels[{key}]"
        if not key:
            fail(lpath, "label key must not be empty")
        if not isinstance(val, str):
            fail(lpath, f"label value must be a string, got {type_name(val)}")
        if "*" in key or "*" in val:
            fail(lpath, "wildcards are not supported in selectors")
        if len(val) > 63:
            fail(lpath, "label value must be at most 63 characters")
    return tuple(sorted((k, str(v)) for k, v in labels.items()))
