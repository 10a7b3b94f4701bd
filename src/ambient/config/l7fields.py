"""Schema pieces shared by the L7 kinds (HTTPRoute, GRPCRoute, VirtualService, DestinationRule),
and Envoy's ``retryOn`` conditions and gRPC status names.

Durations (``GatewayDuration``, ``GoDuration``) are read by ``config.duration``
(Gateway API's and Istio's syntax) into float seconds; ``0s`` means "no timeout".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import TypeVar

from ambient.config.duration import GATEWAY, ISTIO, DurationSyntax, parse_duration
from ambient.config.regex import RegexError, compile_re2
from ambient.config.schema import (
    INVALID,
    AnyValue,
    Choice,
    FieldPath,
    Invalid,
    ListOf,
    Node,
    Report,
    show,
)

T = TypeVar("T")

__all__ = [
    "CONDITIONS",
    "GRPC_CODES",
    "GRPC_CONDITIONS",
    "HTTP_METHODS",
    "REDIRECT_CODES",
    "FilterType",
    "GatewayDuration",
    "GoDuration",
    "Ignored",
    "IntChoice",
    "MatchList",
    "Regex",
    "header_name",
    "parse_retry_on",
]

REDIRECT_CODES = (301, 302, 303, 307, 308)
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")


# gRPC status names Istio accepts for ``grpcStatus`` (with their numbers).
GRPC_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
# Envoy's ``retryOn`` conditions (meaning: ``waypoint.resilience.retry``); the gRPC ones
# match a response's ``grpc-status``.
GRPC_CONDITIONS = {
    "cancelled": "1",
    "deadline-exceeded": "4",
    "resource-exhausted": "8",
    "internal": "13",
    "unavailable": "14",
}
CONDITIONS = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "refused-stream",
        "retriable-4xx",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
        "http3-post-connect-failure",
        *GRPC_CONDITIONS,
    }
)


def parse_retry_on(text: str) -> tuple[frozenset[str], frozenset[int], list[str]]:
    """``retryOn`` -> (conditions, status codes, problems); numbers must be HTTP status codes."""
    conditions: set[str] = set()
    codes: set[int] = set()
    problems: list[str] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        if part.isascii() and part.isdigit() and len(part) <= 9:
            code = int(part)
            if code not in HTTPStatus._value2member_map_ or code < 100:
                problems.append(f"{part!r} is not an HTTP status code")
            else:
                codes.add(code)
        elif part in CONDITIONS:
            conditions.add(part)
        else:
            problems.append(
                f"unknown retry condition {part!r}: expected an HTTP status code or one of "
                + ", ".join(sorted(CONDITIONS))
            )
    if codes:
        conditions.add("retriable-status-codes")
    return frozenset(conditions), frozenset(codes), problems


def _duration(
    value: object, syntax: DurationSyntax, at: FieldPath, report: Report
) -> float | Invalid:
    try:
        if isinstance(value, str):
            return parse_duration(value, syntax)
    except ValueError:
        pass
    report.error(at, f"expected {syntax.expected}, got {show(value)}")
    return INVALID


def header_name(value: str) -> str | None:
    """An HTTP field name (RFC 9110 token)."""
    if _TOKEN.fullmatch(value) is None:
        return f"invalid header name {value!r}: expected letters, digits and !#$%&'*+-.^_`|~"
    return None


class GatewayDuration(Node[float]):
    """A Gateway API Duration (GEP-2257) such as ``10s`` or ``1h30m``, in seconds."""

    expected = GATEWAY.expected

    def parse(self, value: object, at: FieldPath, report: Report) -> float | Invalid:
        return _duration(value, GATEWAY, at, report)


class GoDuration(Node[float]):
    """An Istio duration such as ``2s``, ``0.5s`` or ``100ms``, in seconds (at least 1ms)."""

    expected = ISTIO.expected

    def __init__(self, allow_zero: bool = True) -> None:
        self.allow_zero = allow_zero

    def parse(self, value: object, at: FieldPath, report: Report) -> float | Invalid:
        seconds = _duration(value, ISTIO, at, report)
        if seconds is INVALID or (seconds == 0 and self.allow_zero):
            return seconds
        if seconds < 1e-3:
            report.error(at, f"must be at least 1ms, got {value!r}")
            return INVALID
        return seconds


class Regex(Node[str]):
    """A string that must compile as an RE2 pattern (see ``regex``)."""

    expected = "a string"

    def parse(self, value: object, at: FieldPath, report: Report) -> str | Invalid:
        if not isinstance(value, str):
            return self._type_error(value, at, report)
        try:
            compile_re2(value)
        except RegexError as err:
            report.error(at, str(err))
            return INVALID
        return value


class Ignored(Node[object]):
    """A field the waypoint accepts but does not apply: kept as YAML, with a load warning."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def parse(self, value: object, at: FieldPath, report: Report) -> object:
        frozen = AnyValue().parse(value, at, report)
        if frozen is not INVALID:
            report.warn(at, f"accepted but not applied: {self.reason}")
        return frozen


class IntChoice(Node[int]):
    """One integer out of a fixed set (redirect status codes)."""

    expected = "an integer"

    def __init__(self, choices: tuple[int, ...]) -> None:
        self.choices = choices

    def parse(self, value: object, at: FieldPath, report: Report) -> int | Invalid:
        if isinstance(value, bool) or not isinstance(value, int):
            return self._type_error(value, at, report)
        if value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            report.error(at, f"must be one of {allowed}, got {value}")
            return INVALID
        return value


class FilterType(Choice):
    """A filter ``type``: supported ones, or a clear "not supported" for known others."""

    def __init__(self, supported: tuple[str, ...], unsupported: Mapping[str, str]) -> None:
        super().__init__(*supported)
        self.unsupported = unsupported

    def parse(self, value: object, at: FieldPath, report: Report) -> str | Invalid:
        if isinstance(value, str) and value in self.unsupported:
            report.error(at, f"not supported: {self.unsupported[value]}")
            return INVALID
        return super().parse(value, at, report)


class MatchList(ListOf[T]):
    """``matches``: an empty list means what an absent one means, one match-everything entry."""

    def __init__(self, item: Node[T], default: T | None = None) -> None:
        super().__init__(item)
        self.default = default

    def parse(self, value: object, at: FieldPath, report: Report) -> tuple[T, ...] | Invalid:
        parsed = super().parse(value, at, report)
        if parsed == () and self.default is not None:
            return (self.default,)
        return parsed
