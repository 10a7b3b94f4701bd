"""Redirects, URL rewrites and header changes, as compiled per route rule.

Gateway API redirect ``Location`` (HTTPRequestRedirectFilter): scheme from the
filter or the request; host from the filter or the request's Host without its
port; port from the filter, else the scheme's well-known port when the filter
sets a scheme, else the port the client dialled (the mesh's "listener port");
the port is left out when it is the scheme's default (80 for http, 443 for
https). The query string is kept.

Istio redirect (HTTPRedirect, Envoy's semantics): ``uri`` replaces the whole
path (a query in ``uri`` replaces the request's, otherwise it is kept);
``authority`` replaces host and port; ``port`` / ``derivePort`` set the port;
a scheme change without either drops the port (the new scheme's default).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ambient.waypoint.model import DirectResponse, HeaderOps, RequestHead, Target

__all__ = [
    "GatewayRedirect",
    "GatewayRewrite",
    "IstioRedirect",
    "IstioRewrite",
    "merge_header_ops",
    "replace_prefix",
    "split_host_port",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host_port(authority: str) -> tuple[str, int | None]:
    """``host:port`` / ``[v6]:port`` / ``host`` -> (host, port or None)."""
    if authority.startswith("["):
        end = authority.find("]")
        host, rest = authority[: end + 1], authority[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = authority.partition(":")
    return host, int(port) if port.isascii() and port.isdigit() and len(port) <= 5 else None


def _location(scheme: str, host: str, port: int | None, path: str) -> str:
    if port is None or _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}{path}"
    return f"{scheme}://{host}:{port}{path}"


def _with_query(path: str, request: RequestHead) -> str:
    query = request.query
    return f"{path}?{query}" if query else path


def replace_prefix(path: str, prefix: str, replacement: str) -> str:
    """Gateway API ``ReplacePrefixMatch``: swap the matched segment prefix, keep the rest.

    ``/foo/bar`` with prefix ``/foo`` and ``/xyz`` -> ``/xyz/bar``; trailing
    slashes of prefix and replacement do not add or remove a ``/``; an empty
    result is ``/``.
    """
    prefix = prefix.rstrip("/")
    rest = path[len(prefix) :] if path.startswith(prefix) else path
    out = replacement.rstrip("/") + rest
    return out if out.startswith("/") else "/" + out


@dataclass(frozen=True, slots=True)
class GatewayPath:
    """A PathModifier: a full path (``prefix`` None) or a replacement for ``prefix``."""

    value: str
    prefix: str | None = None

    def apply(self, path: str) -> str:
        return self.value if self.prefix is None else replace_prefix(path, self.prefix, self.value)


@dataclass(frozen=True, slots=True)
class GatewayRedirect:
    scheme: str | None
    hostname: str | None
    port: int | None
    path: GatewayPath | None
    status: int

    def respond(self, target: Target, request: RequestHead, path: str) -> DirectResponse:
        scheme = self.scheme or request.scheme
        host = self.hostname or split_host_port(request.authority)[0]
        if self.port is not None:
            port: int | None = self.port
        elif self.scheme is not None:
            port = _DEFAULT_PORTS[self.scheme]
        else:
            port = target.port
        new_path = self.path.apply(path) if self.path else path
        location = _location(scheme, host, port, _with_query(new_path, request))
        return DirectResponse(self.status, (("location", location),))


@dataclass(frozen=True, slots=True)
class GatewayRewrite:
    hostname: str | None
    path: GatewayPath | None

    def rewrite(self, request: RequestHead, path: str) -> tuple[str | None, str | None]:
        """(new request target, new authority); None where unchanged."""
        new_path = _with_query(self.path.apply(path), request) if self.path else None
        return new_path, self.hostname


@dataclass(frozen=True, slots=True)
class IstioRedirect:
    uri: str | None
    authority: str | None
    port: int | None
    derive_port: str | None
    scheme: str | None
    status: int

    def respond(self, target: Target, request: RequestHead, path: str) -> DirectResponse:
        scheme = self.scheme or request.scheme
        host, port = split_host_port(self.authority or request.authority)
        if self.port is not None:
            port = self.port
        elif self.derive_port == "FROM_REQUEST_PORT":
            port = target.port
        elif self.derive_port == "FROM_PROTOCOL_DEFAULT" or (
            self.scheme is not None and self.scheme != request.scheme
        ):
            port = None
        if self.uri is None:
            new_target = _with_query(path, request)
        elif "?" in self.uri:
            new_target = self.uri
        else:
            new_target = _with_query(self.uri, request)
        location = _location(scheme, host, port, new_target)
        return DirectResponse(self.status, (("location", location),))


@dataclass(frozen=True, slots=True)
class IstioRewrite:
    """``rewrite.uri`` replaces ``prefix`` (the matched prefix; the whole path for other matches)."""

    uri: str | None
    prefix: str | None  # None: replace the whole path
    regex: re.Pattern[str] | None
    substitution: str
    authority: str | None
    ignore_case: bool = False

    def rewrite(self, request: RequestHead, path: str) -> tuple[str | None, str | None]:
        new_path: str | None = None
        if self.uri is not None:
            cut = 0 if self.prefix is None else len(self.prefix)
            new_path = self.uri + path[cut:] if cut else self.uri
        elif self.regex is not None:
            new_path = self.regex.sub(self.substitution, path)
        return (_with_query(new_path, request) if new_path is not None else None), self.authority


def merge_header_ops(ops: Iterable[HeaderOps]) -> HeaderOps:
    """Several header changes as one: a later ``set`` of a name wins, adds and removes add up."""
    set_: dict[str, tuple[str, str]] = {}
    add: list[tuple[str, str]] = []
    remove: list[str] = []
    for op in ops:
        for name, value in op.set:
            set_[name.lower()] = (name.lower(), value)
        add.extend((name.lower(), value) for name, value in op.add)
        remove.extend(name.lower() for name in op.remove if name.lower() not in remove)
    return HeaderOps(tuple(set_.values()), tuple(add), tuple(remove))
