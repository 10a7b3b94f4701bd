"""Durations, in configuration and on the command line: one parser, one syntax per source.

- ``ISTIO``: Istio's ``google.protobuf.Duration`` fields as written in YAML
  (VirtualService timeouts and retries, DestinationRule timeouts and ejection
  times, RequestAuthentication's JWKS timeout): a sequence of decimal numbers,
  each with a unit, as Go's ``time.ParseDuration`` reads them (``h m s ms us µs
  ns``): ``2s``, ``0.5s``, ``1m30s``.
- ``GATEWAY``: a Gateway API ``Duration`` (GEP-2257): one to four parts of one to
  five digits with ``h m s ms``: ``10s``, ``1h30m``.
- ``CLI``: lifetimes on the command line (certificate TTLs, join tokens): whole
  numbers with ``d h m s``: ``30m``, ``1h30m``, ``2d``.

Only ASCII digits count, and no sign or spaces are accepted in any of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["CLI", "GATEWAY", "ISTIO", "DurationSyntax", "parse_duration"]

_SECONDS = {
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}


@dataclass(frozen=True)
class DurationSyntax:
    """How one source writes durations: the number's pattern, the units, how many parts."""

    number: str
    units: tuple[str, ...]
    max_parts: int | None
    expected: str  # "a duration such as ..." for error messages
    _whole: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _part: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unit = "|".join(sorted(self.units, key=len, reverse=True))  # "ms" before "m"
        part = f"({self.number})({unit})"
        repeat = "+" if self.max_parts is None else f"{{1,{self.max_parts}}}"
        object.__setattr__(self, "_part", re.compile(part))
        object.__setattr__(self, "_whole", re.compile(f"(?:(?:{self.number})(?:{unit})){repeat}"))


ISTIO = DurationSyntax(
    number=r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+",
    units=("h", "m", "s", "ms", "us", "µs", "ns"),
    max_parts=None,
    expected="a duration such as '2s', '0.5s' or '100ms'",
)
GATEWAY = DurationSyntax(
    number="[0-9]{1,5}",
    units=("h", "m", "s", "ms"),
    max_parts=4,
    expected="a duration such as '10s', '500ms' or '1h30m'",
)
CLI = DurationSyntax(
    number="[0-9]+",
    units=("d", "h", "m", "s"),
    max_parts=None,
    expected="a duration such as 30m, 1h or 2d",
)


def parse_duration(text: str, syntax: DurationSyntax) -> float:
    """``text`` in seconds; ``ValueError`` naming the expected form when it is not one."""
    if syntax._whole.fullmatch(text) is None:
        raise ValueError(f"expected {syntax.expected}, got {text!r}")
    return sum(float(n) * _SECONDS[u] for n, u in syntax._part.findall(text))
