"""Compiled request matchers, shared by HTTPRoute and VirtualService.

A ``Matcher`` is built once per route match; ``matches(view)`` runs per
request against a ``RequestView``, which splits the path and indexes headers
and query parameters only when a matcher asks for them.

Semantics (Envoy's, which both APIs compile to): regexes match the whole
value; a header with several values is matched against the values joined with
``,``; a repeated query parameter is matched on its first value; header names
are case-insensitive, query parameter names case-sensitive; paths are matched
without the query string. Gateway API ``PathPrefix`` matches whole segments
(``/foo`` matches ``/foo`` and ``/foo/bar``, not ``/foobar``; a trailing ``/`` in
the prefix is ignored); Istio's ``prefix`` is a plain string prefix.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ambient.waypoint.model import RequestHead

__all__ = ["Matcher", "Op", "PathKind", "RequestView", "StringTest"]


class Op(enum.IntEnum):
    EXACT = 0
    PREFIX = 1
    REGEX = 2
    PRESENT = 3


class PathKind(enum.IntEnum):
    ANY = 0
    EXACT = 1
    SEGMENT_PREFIX = 2  # Gateway API PathPrefix
    STRING_PREFIX = 3  # Istio prefix
    REGEX = 4


@dataclass(frozen=True, slots=True)
class StringTest:
    """One string condition; ``pattern`` is set for ``REGEX``."""

    op: Op
    value: str = ""
    pattern: re.Pattern[str] | None = None
    invert: bool = False  # Istio withoutHeaders

    def test(self, actual: str | None) -> bool:
        return self._test(actual) != self.invert

    def _test(self, actual: str | None) -> bool:
        if actual is None:
            return False
        op = self.op
        if op is Op.EXACT:
            return actual == self.value
        if op is Op.PREFIX:
            return actual.startswith(self.value)
        if op is Op.REGEX:
            assert self.pattern is not None
            return self.pattern.fullmatch(actual) is not None
        return True


class RequestView:
    """A request's parts as matchers need them, computed on first use."""

    __slots__ = ("_headers", "_query", "path", "port", "request")

    def __init__(self, request: RequestHead, port: int) -> None:
        self.request = request
        self.port = port
        target = request.path
        cut = target.find("?")
        self.path = target if cut < 0 else target[:cut]
        self._headers: dict[str, str] | None = None
        self._query: dict[str, str] | None = None

    def header(self, name: str) -> str | None:
        """``name`` (lower case) with its values joined by ``,``, or None."""
        headers = self._headers
        if headers is None:
            headers = {}
            for key, value in self.request.headers:
                old = headers.get(key)
                headers[key] = value if old is None else f"{old},{value}"
            self._headers = headers
        return headers.get(name)

    def query(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        query = self._query
        if query is None:
            query = {}
            for key, value in self.request.query_params():
                query.setdefault(key, value)
            self._query = query
        return query.get(name)


@dataclass(frozen=True, slots=True)
class Matcher:
    """Every condition of one match; an empty matcher matches every request."""

    path_kind: PathKind = PathKind.ANY
    path: str = ""  # exact value or prefix (segment prefix: without trailing '/')
    path_pattern: re.Pattern[str] | None = None
    ignore_case: bool = False
    method: StringTest | None = None
    headers: tuple[tuple[str, StringTest], ...] = ()
    query: tuple[tuple[str, StringTest], ...] = ()
    authority: StringTest | None = None
    scheme: StringTest | None = None
    port: int | None = None

    def matches(self, view: RequestView) -> bool:
        if self.port is not None and view.port != self.port:
            return False
        if not self._path_matches(view.path):
            return False
        request = view.request
        if self.method is not None and not self.method.test(request.method):
            return False
        for name, test in self.headers:
            if not test.test(view.header(name)):
                return False
        for name, test in self.query:
            if not test.test(view.query(name)):
                return False
        if self.authority is not None and not self.authority.test(request.authority):
            return False
        return self.scheme is None or self.scheme.test(request.scheme)

    def _path_matches(self, path: str) -> bool:
        kind = self.path_kind
        if kind is PathKind.ANY:
            return True
        if kind is PathKind.REGEX:
            assert self.path_pattern is not None
            return self.path_pattern.fullmatch(path) is not None
        if self.ignore_case:
            path = path.lower()
        if kind is PathKind.EXACT:
            return path == self.path
        if kind is PathKind.STRING_PREFIX:
            return path.startswith(self.path)
        prefix = self.path  # segment prefix, "" for "/"
        if not path.startswith(prefix):
            return False
        return len(path) == len(prefix) or path[len(prefix)] == "/"
